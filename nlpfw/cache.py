"""Read a recipe's corpus, encode it, and cache the result on disk keyed by content.

The key is a digest of the data files' contents (sha256), the dataset, task and window
settings, and the encoder's `fingerprint()` (its vocabulary and lookup rules). A second run
of the same recipe on the same files loads flat arrays from disk instead of parsing and
tokenising again; change any file, option or vocabulary and the key changes with it.

The cache lives in `$NLPFW_CACHE_DIR` (default `~/.cache/nlpfw`); `NLPFW_CACHE_DIR=off` or
`nlpfw run --no-cache` turns it off. Each entry is a folder of `.npy` arrays and a
`meta.json`, written under a temporary name and renamed into place, so an interrupted run
never leaves a half entry behind. Deleting the folder is always safe.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from nlpfw import __version__
from nlpfw.corpus import EncodedSplit, Stats, encode_split
from nlpfw.interfaces import Dataset, Encoder, Example, Task
from nlpfw.recipe import Section

CACHE_ENV = "NLPFW_CACHE_DIR"
FORMAT = 4  # 3: span tables (gold spans for span decoders); 4: any task (per-text values, gold as JSON)
_OFF = ("off", "0", "false", "no", "none")


def cache_dir() -> Path | None:
    """The cache folder, or None when `$NLPFW_CACHE_DIR` turns the cache off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nlpfw"


def file_digest(path: Path) -> str:
    """sha256 of a file's contents; computed once per process while its size and mtime hold
    (the cache key and the run's record of its data files both ask)."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Corpus:
    """What a run trains and evaluates on."""

    task: Task
    splits: dict[str, EncodedSplit]
    skipped: list[str]  # bad records left out under dataset.on_error = "skip"
    cached: bool  # read from the cache
    key: str | None  # the cache key (None: not cacheable)


def prepare_corpus(
    task_section: Section,
    dataset_section: Section,
    dataset: Dataset,
    encoder: Encoder,
    split_names: Sequence[str],
    window: int | None,
    stride: int,
    use_cache: bool = True,
) -> Corpus:
    """Load and encode `split_names` of the dataset, from the cache when the key matches."""
    key = corpus_key(task_section, dataset_section, dataset, encoder, split_names, window, stride)
    root = cache_dir() if use_cache else None
    folder = root / "corpora" / key if root is not None and key is not None else None
    if folder is not None and (folder / "meta.json").is_file():
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            task = task_section.component.cls(task_section.config, meta["labels"])
            splits = {name: _load_split(folder, name, meta["splits"][name], window, stride, task) for name in split_names}
            return Corpus(task, splits, meta["skipped"], cached=True, key=key)
        except Exception as error:  # a damaged entry (a torn .npy, bad JSON): rebuild it
            _warn(f"the corpus cache entry {folder} is damaged ({type(error).__name__}: "
                  f"{str(error).splitlines()[0] if str(error) else ''}); reading the corpus again")  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
    examples = {name: dataset.load(name) for name in split_names}
    task = task_section.component.cls(task_section.config, dataset.labels())
    splits = {
        name: encode_split(examples[name], partial(task.encode, encoder=encoder), window, stride)
        for name in split_names
    }
    if folder is not None:
        _save(folder, task, splits, dataset.skipped)
    return Corpus(task, splits, list(dataset.skipped), cached=False, key=key)


def corpus_key(
    task_section: Section,
    dataset_section: Section,
    dataset: Dataset,
    encoder: Encoder,
    split_names: Sequence[str],
    window: int | None,
    stride: int,
) -> str | None:
    """Digest of everything the encoded splits depend on, or None if a part cannot be keyed."""
    fingerprint = encoder.fingerprint()
    files = {name: dataset.files(name) for name in split_names}
    if fingerprint is None or any(f is None for f in files.values()):
        return None
    parts = {
        "format": FORMAT,
        "nlpfw": __version__,
        "dataset": [dataset_section.type, dataset_section.config.content_settings()],
        "files": {name: [file_digest(Path(f)) for f in paths or ()] for name, paths in files.items()},
        "task": [task_section.type, task_section.config.model_dump(mode="json")],
        "encoder": fingerprint,
        "window": [window, stride],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


_WINDOW_ARRAYS = ("text_starts", "window_text", "window_start", "window_length")


def _warn(message: str) -> None:
    sys.stderr.write(f"Warning: {message}\n")


def _save(folder: Path, task: Task, splits: dict[str, EncodedSplit], skipped: list[str]) -> None:
    """Write a cache entry; one that cannot be written (an unwritable or full cache folder) is
    a warning, never a failed run, and leaves no partial entry behind."""
    partial = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    try:
        _write_entry(partial, folder, task, splits, skipped)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        from nlpfw.io import reason

        _warn(f"the corpus cache {folder.parent.parent} cannot be written ({reason(error, folder.parent)}); "
              f"the run goes on without it (set {CACHE_ENV} to a writable folder, or to off)")  # fmt: skip
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _clean_partials(corpora: Path) -> None:
    """Remove partial entries that killed processes left."""
    from nlpfw.io import pid_alive

    for leftover in corpora.glob("*.tmp-*"):
        pid = leftover.name.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _write_entry(partial: Path, folder: Path, task: Task, splits: dict[str, EncodedSplit], skipped: list[str]) -> None:
    if folder.parent.is_dir():
        _clean_partials(folder.parent)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    meta: dict[str, Any] = {"format": FORMAT, "labels": task.labels, "skipped": skipped, "splits": {}}
    for name, split in splits.items():
        for column, values in split.columns.items():
            np.save(partial / f"{name}.column.{column}.npy", values)
        for array in _WINDOW_ARRAYS:
            np.save(partial / f"{name}.{array}.npy", getattr(split, array))
        for table, rows in split.tables.items():
            np.save(partial / f"{name}.table.{table}.npy", rows)
            np.save(partial / f"{name}.table_starts.{table}.npy", split.table_starts[table])
        for value, rows in split.values.items():
            np.save(partial / f"{name}.value.{value}.npy", rows)
        examples = split.examples
        with (partial / f"{name}.gold.jsonl").open("w", encoding="utf-8") as stream:
            # one line a text: null for an unlabelled one
            stream.writelines(
                json.dumps(None if e.gold is None else task.gold_to_json(e.gold), ensure_ascii=False) + "\n"
                for e in examples
            )
        with (partial / f"{name}.text.txt").open("w", encoding="utf-8", newline="") as stream:
            stream.writelines(e.text for e in examples)
        meta["splits"][name] = {
            "columns": sorted(split.columns),
            "tables": sorted(split.tables),
            "values": sorted(split.values),
            "ids": [e.id for e in examples],
            "stats": asdict(split.stats),
        }
    (partial / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    try:
        partial.rename(folder)
    except OSError:  # another run wrote the same entry first; theirs is as good as ours
        shutil.rmtree(partial, ignore_errors=True)


def _load_split(folder: Path, name: str, meta: dict[str, Any], window: int | None, stride: int, task: Task) -> EncodedSplit:
    def array(part: str) -> np.ndarray:
        return np.load(folder / f"{name}.{part}.npy", allow_pickle=False)

    def examples() -> list[Example]:
        with (folder / f"{name}.text.txt").open(encoding="utf-8", newline="") as stream:
            text = stream.read()  # newline="": a "\r" in a text stays as it is
        starts = array("text_starts").tolist()
        with (folder / f"{name}.gold.jsonl").open(encoding="utf-8") as stream:
            gold = [json.loads(line) for line in stream]
        return [
            Example(text[starts[i] : starts[i + 1]], None if g is None else task.gold_from_json(g), meta["ids"][i])
            for i, g in enumerate(gold)
        ]

    return EncodedSplit(
        columns={column: array(f"column.{column}") for column in meta["columns"]},
        **{part: array(part) for part in _WINDOW_ARRAYS},
        window=window,
        stride=stride,
        stats=Stats(**meta["stats"]),
        tables={table: array(f"table.{table}") for table in meta["tables"]},
        table_starts={table: array(f"table_starts.{table}") for table in meta["tables"]},
        values={value: array(f"value.{value}") for value in meta["values"]},
        examples_loader=examples,
    )
