"""Load + tokenise People's Daily 2014 at the reference's size: cold, cached, and a baseline.

The stand-in pair under the data root (26,326 sentences) is repeated line by line to the
reference's 286,269 sentences and written to a scratch folder. Each measurement runs in a
fresh process, which reports its wall time and peak resident memory:

  cold     nlpfw reads the pair, splits it (seed 2022, 20% dev), encodes it into flat arrays
           and writes the cache;
  cached   the same call again: the cache is read;
  lists    the baseline: the same texts encoded the naive way, a Python list of ints per
           text for the ids and another for the tags (what nlpfw 0.1 held in memory).

Memory is reported as the peak over the process's resident size once torch, the encoder
and the vocabulary are loaded, per character of the corpus.

    python benchmarks/corpus_load.py [--sentences 286269] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = "python benchmarks/corpus_load.py"
SOURCE, TARGET = "source_BIO_2014_corpus.txt", "target_BIO_2014_corpus.txt"


def rss_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def replicate(data_root: Path, folder: Path, sentences: int) -> None:
    """Write the stand-in pair repeated line by line to `sentences` lines."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (SOURCE, TARGET):
        lines = (data_root / "people_daily_2014" / name).read_text(encoding="utf-8").split("\n")
        lines = [line for line in lines if line]
        with (folder / name).open("w", encoding="utf-8") as out:
            for i in range(sentences):
                out.write(lines[i % len(lines)] + "\n")


def child(mode: str, folder: Path, data_root: Path) -> dict:
    """One measurement, in this (fresh) process."""
    from nlpfw.cache import prepare_corpus
    from nlpfw.corpus import window_settings
    from nlpfw.plugins import build_registry, get_plugin_manager
    from nlpfw.recipe import load_recipe

    registry = build_registry(get_plugin_manager(load_entrypoints=False))
    recipe = load_recipe(
        Path(__file__).resolve().parent.parent / "recipes" / "quickstart.toml",
        registry,
        ['dataset.type="peoples_daily_2014.v1"', f'dataset.path="{folder}"',
         "encoder.max_position_embeddings=256", "encoder.num_layers=1"],
    )  # fmt: skip
    dataset = recipe.dataset.component.cls(recipe.dataset.config, data_root)
    encoder = recipe.encoder.component.cls.from_config(recipe.encoder.config, data_root)
    window, stride = window_settings(recipe.trainer.window, recipe.trainer.stride, encoder.max_chars)
    encoder.char_ids("预热")  # build the lookup table before the baseline
    baseline = rss_bytes()
    start = time.perf_counter()
    if mode == "lists":
        task = recipe.task.component.cls(recipe.task.config, dataset.labels())
        index = {label: i for i, label in enumerate(task.tags)}
        features = []
        for split in ("train", "dev"):
            for example in dataset.load(split):
                tags = ["O"] * len(example.text)
                for span in example.gold or ():
                    tags[span.start : span.end] = [f"B-{span.label}"] + [f"I-{span.label}"] * (span.end - span.start - 1)
                ids = [encoder.char_id(c) for c in example.text]
                features.append({"input_ids": ids, "tags": [index[t] for t in tags]})
        chars = sum(len(f["input_ids"]) for f in features)
        cached = False
    else:
        corpus = prepare_corpus(recipe.task, recipe.dataset, dataset, encoder, ("train", "dev"), window, stride)
        chars = sum(split.stats.chars for split in corpus.splits.values())
        sizes = {name: split.stats.examples for name, split in corpus.splits.items()}
        cached = corpus.cached
    elapsed = time.perf_counter() - start
    result = {"mode": mode, "seconds": elapsed, "chars": chars, "cached": cached,
              "baseline_bytes": baseline, "peak_bytes": peak_bytes()}  # fmt: skip
    if mode != "lists":
        result["sentences"] = sizes
    return result


def measure(mode: str, folder: Path, data_root: Path, cache: Path) -> dict:
    env = {**os.environ, "NLPFW_CACHE_DIR": str(cache), "NLPFW_DATA_ROOT": str(data_root)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--workdir", str(folder)],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=286_269)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from nlpfw.data import data_root as default_data_root

    data_root = default_data_root()
    if args.child:
        print(json.dumps(child(args.child, args.workdir, data_root)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        folder, cache = work / "people_daily_2014", work / "cache"
        replicate(data_root, folder, args.sentences)
        rows = [measure(mode, folder, data_root, cache) for mode in ("cold", "cached", "lists")]
    cold, cached, lists = rows
    assert not cold["cached"] and cached["cached"]
    print(f"{args.sentences:,} sentences ({cold['sentences']['train']:,} train / {cold['sentences']['dev']:,} dev), "
          f"{cold['chars']:,} characters; {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'':8} {'seconds':>8} {'peak RSS MB':>12} {'over base MB':>13} {'bytes/char':>11}")
    for row in rows:
        over = row["peak_bytes"] - row["baseline_bytes"]
        print(f"{row['mode']:8} {row['seconds']:8.1f} {row['peak_bytes'] / 2**20:12.0f} "
              f"{over / 2**20:13.0f} {over / row['chars']:11.1f}")  # fmt: skip
    print(f"cold/cached time: {cold['seconds'] / cached['seconds']:.1f}x; "
          f"memory over base, lists/cold: {(lists['peak_bytes'] - lists['baseline_bytes']) / max(cold['peak_bytes'] - cold['baseline_bytes'], 1):.1f}x")  # fmt: skip
    print(f"command: {COMMAND} --sentences {args.sentences}")


if __name__ == "__main__":
    main()
