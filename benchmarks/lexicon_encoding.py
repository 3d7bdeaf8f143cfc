"""What bilstm.v1's SoftLexicon features cost before training: building the lexicon and encoding
CLUENER2020 train + dev, with and without it, and reading the encoded corpus back from the cache.

  fit         `fit_texts` on the training texts: the character and bigram vocabularies, and with
              the lexicon: reading the dictionary (jieba's, ~350k words), one automaton over all
              of it to find the words the training texts hold, then the automaton of those words
  encode      train + dev through the task's `encode` (every text's `char_ids`), cache off
  cached      the same corpus read back from the corpus cache (a second run)
  matching    the automaton alone over train + dev, and the same matching done with a dict of
              the words' prefixes (the alternative the brief allows only if faster)

    python benchmarks/lexicon_encoding.py [--lexicon jieba] [--vectors DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def prefix_dict_matches(text: str, words: dict[str, int], prefixes: set[str], longest: int) -> list[tuple[int, int, int]]:
    """Every occurrence of every word, by extending each start while the piece is a prefix."""
    found = []
    for start in range(len(text)):
        for end in range(start + 1, min(len(text), start + longest) + 1):
            piece = text[start:end]
            if piece not in prefixes:
                break
            index = words.get(piece)
            if index is not None:
                found.append((start, end, index))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lexicon", default="jieba")
    parser.add_argument("--vectors", type=Path, default=None, help="a `nlpfw vectors train` folder (its words.vec)")
    args = parser.parse_args()
    os.environ["NLPFW_CACHE_DIR"] = tempfile.mkdtemp(prefix="nlpfw-lexicon-bench-")
    from nlpfw.cache import prepare_corpus
    from nlpfw.data import data_root
    from nlpfw.plugins import build_registry, get_plugin_manager
    from nlpfw.recipe import load_recipe
    from nlpfw_plugins.lexicon import Lexicon, read_dictionary

    registry = build_registry(get_plugin_manager(load_entrypoints=False))
    results = {}
    for name, overrides in (
        ("characters + bigrams", []),
        ("+ lexicon", [f"encoder.lexicon={args.lexicon}"]
         + ([f"encoder.lexicon_vectors={args.vectors / 'words.vec'}"] if args.vectors else [])),
    ):  # fmt: skip
        recipe = load_recipe(ROOT / "recipes" / "bilstm_crf_cluener.toml", registry, overrides)
        dataset = recipe.dataset.component.cls(recipe.dataset.config, data_root())
        encoder = recipe.encoder.component.cls.from_config(recipe.encoder.config, data_root())
        texts = [e.text for e in dataset.load("train")]
        start = time.perf_counter()
        encoder.fit_texts(texts)
        fit = time.perf_counter() - start
        timings = {"fit": fit}
        for label in ("encode", "cached"):
            start = time.perf_counter()
            corpus = prepare_corpus(recipe.task, recipe.dataset, dataset, encoder, ("train", "dev"), None, 0)
            timings[label] = time.perf_counter() - start
            assert corpus.cached == (label == "cached")
        timings["chars"] = sum(s.stats.chars for s in corpus.splits.values())
        timings["row"] = list(corpus.splits["train"].columns["input_ids"].shape[1:])
        if encoder.lexicon is not None:
            timings["words"] = len(encoder.words)
            all_texts = [encoder.folded(e.text) for split in ("train", "dev") for e in dataset.load(split)]
            start = time.perf_counter()
            automaton = sum(len(encoder.lexicon.matches(t)) for t in all_texts)
            timings["automaton"] = time.perf_counter() - start
            words = {w: i for i, w in enumerate(encoder.words, 1)}
            prefixes = {w[:k] for w in words for k in range(1, len(w) + 1)}
            longest = max(map(len, words))
            start = time.perf_counter()
            by_prefix = sum(len(prefix_dict_matches(t, words, prefixes, longest)) for t in all_texts)
            timings["prefix_dict"] = time.perf_counter() - start
            assert automaton == by_prefix, (automaton, by_prefix)
            timings["matches"] = automaton
            dictionary = sorted(read_dictionary(encoder.files["lexicon"]))
            start = time.perf_counter()
            Lexicon(dictionary)
            timings["full_automaton_build"] = time.perf_counter() - start
        results[name] = timings
        print(name, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()}), flush=True)


if __name__ == "__main__":
    main()
