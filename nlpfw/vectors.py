"""Character, bigram and word vectors trained on unlabelled text (`nlpfw vectors train`).

Three word2vec text files, in the form `bilstm.v1` reads (`encoder.vectors`,
`encoder.bigram_vectors`, `encoder.lexicon_vectors`):

    chars.vec    one vector per character (the texts' characters, folded as bilstm.v1 folds them)
    bigrams.vec  one per pair of adjacent characters (two-character tokens)
    words.vec    one per word of the texts as jieba segments them (for the lexicon features)
    vectors.json the sources (with their sha256), the options, counts and training times

trained with gensim (word2vec, or fastText). Whitespace separates texts' pieces and is never a
token. The sources are plain-text files (one text a line), People's Daily 1998 files
(`word/TAG  word/TAG` lines: the words joined back into text) and the splits of a recipe's
dataset (`RECIPE:SPLIT`). A `dev` split is refused: dev texts choose and score the model, and
vectors that have read them leak them into it. Use only the texts you may train on (for
CLUENER: train, and the unlabelled test texts if you choose to; say so).

The result is cached (`$NLPFW_CACHE_DIR/vectors/KEY`) under a digest of the sources' contents
and every option, so the same command on the same files copies the cached files instead of
training again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlpfw import io
from nlpfw.errors import DataError, NlpfwError
from nlpfw.textfile import open_text

FORMAT = 1  # bump when the tokens or the training change (keys the cache)
FILES = {"chars": "chars.vec", "bigrams": "bigrams.vec", "words": "words.vec"}
REFUSED_SPLITS = ("dev",)


@dataclass(frozen=True)
class Source:
    """Where texts come from: `kind` is `text`, `pfr` or `split` (`path` is then the recipe,
    `split` its split)."""

    kind: str
    path: Path
    split: str | None = None

    def describe(self) -> str:
        return f"{self.path}:{self.split}" if self.split else f"{self.kind} {self.path}"


@dataclass(frozen=True)
class Options:
    char_size: int = 128
    bigram_size: int = 64
    word_size: int = 50
    method: str = "word2vec"  # or fasttext
    epochs: int = 5
    window: int = 5
    min_count: int = 2
    skipgram: bool = True
    seed: int = 42
    workers: int = 1  # 1: the same vectors on every run


def split_source(spec: str) -> Source:
    """`RECIPE:SPLIT` as a source; a dev split is refused."""
    recipe, sep, split = spec.rpartition(":")
    if not sep or not recipe or not split:
        raise NlpfwError(f"--split {spec!r}: expected RECIPE:SPLIT, e.g. recipes/bilstm_crf_cluener.toml:train")
    if split in REFUSED_SPLITS:
        raise NlpfwError(
            f"--split {spec!r}: the {split} split is refused: dev texts choose and score the model, and vectors "
            "trained on them leak them into it (use train, or unlabelled text)"
        )
    return Source("split", Path(recipe), split)


def read_texts(source: Source, registry: Any = None, data_root: Path | None = None) -> Iterator[str]:
    """The texts of a source, one at a time."""
    if source.kind == "split":
        dataset = _dataset(source, registry, data_root)
        yield from (example.text for example in dataset.load(source.split))
        return
    if not source.path.is_file():
        raise DataError(f"{source.path}: file not found")
    with open_text(source.path) as lines:
        for number, line in lines:
            assert line is not None
            if source.kind == "pfr":
                yield _pfr_text(line, f"{source.path}:{number}")
            else:
                yield line


def _pfr_text(line: str, where: str) -> str:
    """A People's Daily 1998 line (`word/TAG  word/TAG ...`) as its text."""
    words = []
    for token in line.split():
        word, sep, tag = token.rpartition("/")
        if not sep or not word or not tag:
            raise DataError(f"{where}: {token!r} is not word/TAG (a People's Daily 1998 line is `word/TAG  word/TAG ...`)")
        words.append(word)
    return "".join(words)


def _dataset(source: Source, registry: Any, data_root: Path | None) -> Any:
    from nlpfw.data import data_root as default_root
    from nlpfw.recipe import load_recipe

    recipe = load_recipe(source.path, registry)
    dataset = recipe.dataset.component.cls(recipe.dataset.config, data_root or default_root())
    if source.split not in dataset.splits():
        raise NlpfwError(f"--split {source.path}:{source.split}: {recipe.dataset.type} has no split {source.split!r} "
                         f"(it has {', '.join(dataset.splits())})")  # fmt: skip
    return dataset


def source_key(source: Source, registry: Any, data_root: Path | None) -> Any:
    """What a source's texts depend on: its file's sha256, or the dataset's settings and the
    digests of the files it reads for the split (None: not keyable)."""
    from nlpfw.cache import file_digest

    if source.kind != "split":
        if not source.path.is_file():
            raise DataError(f"{source.path}: file not found")
        return [source.kind, file_digest(source.path)]
    from nlpfw.recipe import load_recipe

    recipe = load_recipe(source.path, registry)
    dataset = _dataset(source, registry, data_root)
    files = dataset.files(source.split)
    if files is None:
        return None
    return ["split", recipe.dataset.type, recipe.dataset.config.content_settings(), source.split,
            [file_digest(Path(f)) for f in files]]  # fmt: skip


def cache_key(keys: Sequence[Any], options: Options) -> str | None:
    if any(k is None for k in keys):
        return None
    import gensim

    parts = {"format": FORMAT, "gensim": gensim.__version__, "sources": list(keys), "options": options.__dict__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:40]


def _stable_hash(text: str) -> int:
    """gensim seeds each word's initial vector by hashing it; Python's own str hash changes
    from process to process, this one does not."""
    return zlib.crc32(text.encode("utf-8"))


def tokens(texts: Sequence[str], fold: Callable[[str], str]) -> tuple[list[list[str]], list[list[str]]]:
    """Character and bigram sentences of `texts`: each text's whitespace-free pieces, folded."""
    chars, bigrams = [], []
    for text in texts:
        for piece in "".join(fold(c) for c in text).split():
            chars.append(list(piece))
            if len(piece) > 1:
                bigrams.append([piece[i : i + 2] for i in range(len(piece) - 1)])
    return chars, bigrams


def words(texts: Sequence[str], fold: Callable[[str], str]) -> list[list[str]]:
    """Word sentences of `texts` as jieba segments them (its dictionary only, no HMM), folded."""
    try:
        import jieba
    except ImportError:
        raise NlpfwError("word vectors (--word-size) need jieba: pip install 'nlpfw[vectors]'") from None
    import logging

    jieba.setLogLevel(logging.WARNING)
    sentences = []
    for text in texts:
        sentence = ["".join(fold(c) for c in w) for w in jieba.lcut(text, HMM=False) if w.strip()]
        if sentence:
            sentences.append(sentence)
    return sentences


def train_vectors(sentences: list[list[str]], size: int, options: Options, path: Path) -> dict[str, Any]:
    """Train one model on `sentences` and write its vectors to `path`; its counts and time."""
    try:
        from gensim.models import FastText, Word2Vec
    except ImportError:
        raise NlpfwError("nlpfw vectors train needs gensim: pip install 'nlpfw[vectors]'") from None
    start = time.perf_counter()
    model_class = FastText if options.method == "fasttext" else Word2Vec
    model = model_class(
        sentences, vector_size=size, window=options.window, min_count=options.min_count, sg=int(options.skipgram),
        epochs=options.epochs, seed=options.seed, workers=options.workers, hashfxn=_stable_hash,
    )  # fmt: skip
    model.wv.save_word2vec_format(str(path))
    return {"tokens": len(model.wv), "seconds": round(time.perf_counter() - start, 2)}


def train_all(
    out: Path, sources: Sequence[Source], options: Options, registry: Any = None, data_root: Path | None = None,
    use_cache: bool = True, report: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:  # fmt: skip
    """Write the vector files of `sources` into `out` (from the cache when the key matches);
    return what `vectors.json` holds."""
    from nlpfw.cache import cache_dir
    from nlpfw.textfile import fold

    if not sources:
        raise NlpfwError("no texts: give --text, --pfr or --split")
    keys = [source_key(s, registry, data_root) for s in sources]
    key = cache_key(keys, options)
    root = cache_dir() if use_cache else None
    folder = root / "vectors" / key if root is not None and key is not None else None
    out.mkdir(parents=True, exist_ok=True)
    if folder is not None and (folder / "vectors.json").is_file():
        meta = json.loads((folder / "vectors.json").read_text(encoding="utf-8"))
        for name in [*meta["files"], "vectors.json"]:
            shutil.copyfile(folder / name, out / name)
        meta["cached"] = True
        report(f"cached: {folder}")
        return meta
    start = time.perf_counter()
    texts: list[str] = []
    counts = []
    for source, source_digest in zip(sources, keys):
        before = len(texts)
        texts.extend(read_texts(source, registry, data_root))
        counts.append({"source": source.describe(), "key": source_digest, "texts": len(texts) - before,
                       "chars": sum(len(t) for t in texts[before:])})  # fmt: skip
        report(f"read {counts[-1]['texts']:,} texts, {counts[-1]['chars']:,} characters: {source.describe()}")
    meta: dict[str, Any] = {"key": key, "sources": counts, "options": options.__dict__, "files": [], "times": {}}
    meta["times"]["read"] = round(time.perf_counter() - start, 2)
    work = out / f".vectors.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        chars, bigrams = tokens(texts, fold)
        for name, sentences, size in (("chars", chars, options.char_size), ("bigrams", bigrams, options.bigram_size)):
            if size:
                meta[name] = train_vectors(sentences, size, options, work / FILES[name])
                meta["files"].append(FILES[name])
                report(f"{FILES[name]}: {meta[name]['tokens']:,} vectors of {size} in {meta[name]['seconds']} s")
        if options.word_size:
            segment = time.perf_counter()
            sentences = words(texts, fold)
            meta["times"]["segment"] = round(time.perf_counter() - segment, 2)
            report(f"segmented with jieba in {meta['times']['segment']} s")
            meta["words"] = train_vectors(sentences, options.word_size, options, work / FILES["words"])
            meta["files"].append(FILES["words"])
            report(f"{FILES['words']}: {meta['words']['tokens']:,} vectors of {options.word_size} in {meta['words']['seconds']} s")
        meta["times"]["total"] = round(time.perf_counter() - start, 2)
        io.write_json(work / "vectors.json", meta)
        for name in [*meta["files"], "vectors.json"]:
            os.replace(work / name, out / name)
        if folder is not None:
            _store(folder, out, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta["cached"] = False
    return meta


def _store(folder: Path, out: Path, meta: dict[str, Any]) -> None:
    """Copy the written files into the cache (under a temporary name, then renamed); a cache
    that cannot be written is a warning."""
    import sys

    partial = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    try:
        partial.mkdir(parents=True, exist_ok=True)
        for name in [*meta["files"], "vectors.json"]:
            shutil.copyfile(out / name, partial / name)
        partial.rename(folder)
    except OSError as error:
        sys.stderr.write(f"Warning: the vectors cache {folder.parent} cannot be written ({error}); the vectors are in {out}\n")
    finally:
        shutil.rmtree(partial, ignore_errors=True)
