"""The annotation loop on CLUENER, simulated: uncertainty ranking against random choice.

Each strategy starts from the same labelled seed set (Label Studio tasks) and, for each round:
trains `recipes/active_learning_tiny.toml` on the labelled tasks (dataset `label_studio.v1`),
pre-annotates the unlabelled pool (`nlpfw predict --output-format label-studio`, with `--rank
uncertainty` for the uncertainty strategy), lets the "annotator" correct the next `budget` tasks
(the top of the ranking, or a seeded random draw) by replacing the pre-annotations with the
gold CLUENER spans, and adds them to the labelled set. Every round's model is scored on the
same held-out CLUENER dev texts (`nlpfw evaluate --data`), never used for training or model
selection; the first `--dev` dev texts select each run's best epoch. Same budget, same seeds,
same model and settings for both strategies: only the choice of texts differs.

    flock /tmp/nlpfw-cpu.lock .venv/bin/python benchmarks/active_learning.py \\
        --seed-size 200 --pool 4000 --budget 200 --rounds 5 --seeds 1 2 --out /tmp/al
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from nlpfw.interfaces import Example  # noqa: E402
from nlpfw_plugins.cluener import Cluener, CluenerConfig  # noqa: E402
from nlpfw_plugins.formats import json_lines, label_studio_tasks, spans_records  # noqa: E402

RECIPE = _common.ROOT / "recipes" / "active_learning_tiny.toml"
STRATEGIES = ("uncertainty", "random")


def nlpfw(*args: Any, log: Path | None = None) -> None:
    """An `nlpfw` command in this process (no interpreter start-up a round), its output appended
    to `log`; fails loudly."""
    from nlpfw.cli import cli

    with contextlib.ExitStack() as stack:
        if log is not None:
            stream = stack.enter_context(log.open("a", encoding="utf-8"))
            stack.enter_context(contextlib.redirect_stdout(stream))
            stack.enter_context(contextlib.redirect_stderr(stream))
        try:
            cli.main([str(a) for a in args], prog_name="nlpfw", standalone_mode=False)
        except SystemExit as stop:
            if stop.code:
                raise RuntimeError(f"nlpfw {' '.join(map(str, args))} exited with {stop.code} (see {log})") from None


def write_tasks(path: Path, examples: list[Example]) -> None:
    path.write_text(json.dumps(label_studio_tasks(examples), ensure_ascii=False), encoding="utf-8")


def corpus(data_root: Path, seed_size: int, pool_size: int, dev_size: int, test_size: int | None):
    """(seed set, pool, selection dev, held-out test) from CLUENER: train shuffled once (seed 0)."""
    train = Cluener(CluenerConfig(), data_root).load("train")
    dev = Cluener(CluenerConfig(), data_root).load("dev")
    order = list(range(len(train)))
    random.Random(0).shuffle(order)
    labelled = [train[i] for i in order[:seed_size]]
    pool = [Example(train[i].text, train[i].gold, f"p{i}") for i in order[seed_size : seed_size + pool_size]]
    test = dev[dev_size:] if test_size is None else dev[dev_size : dev_size + test_size]
    return labelled, pool, dev[:dev_size], test


def train_and_score(work: Path, run: Path, labelled: list[Example], seed: int, epochs: int | None, test: Path) -> float:
    write_tasks(work / "train.json", labelled)
    overrides = [f"dataset.path={work}", "dataset.train=train.json", "dataset.dev=dev.json", f"trainer.seed={seed}"]
    overrides += [f"trainer.epochs={epochs}"] if epochs else []
    log = work / "log.txt"
    nlpfw("run", RECIPE, "-o", run, "--overwrite", "--no-cache", *[a for o in overrides for a in ("--set", o)], log=log)
    nlpfw("evaluate", run, "--data", test, "--output", run / "test_scores.json", log=log)
    return json.loads((run / "test_scores.json").read_text(encoding="utf-8"))["scores"]["overall"]["f1"]


def choose(strategy: str, run: Path, work: Path, pool: list[Example], budget: int, rng: random.Random) -> list[str]:
    """The ids of the next `budget` pool texts to label: the top of the uncertainty ranking of
    the run's Label Studio pre-annotations, or a seeded random draw."""
    if strategy == "random":
        return [e.id for e in rng.sample(pool, min(budget, len(pool)))]
    (work / "pool.jsonl").write_text(json_lines({"id": e.id, "text": e.text} for e in pool), encoding="utf-8")
    nlpfw("predict", run, "--input", work / "pool.jsonl", "--output-format", "label-studio", "--rank", "uncertainty",
          "--output", work / "pool_tasks.json", log=work / "log.txt")  # fmt: skip
    tasks = json.loads((work / "pool_tasks.json").read_text(encoding="utf-8"))
    return [t["data"]["id"] for t in tasks[:budget]]


def loop(strategy: str, seed: int, args: argparse.Namespace, data: tuple, out: Path,
         first: dict[int, tuple[Path, float]]) -> list[dict[str, Any]]:  # fmt: skip
    """One strategy's rounds; `first` holds each seed's round-0 run and score, which the
    strategies share (the same seed set and seed train the same model)."""
    seed_set, pool, dev, test = data
    work = out / f"{strategy}-seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    write_tasks(work / "dev.json", dev)
    (work / "test.jsonl").write_text(json_lines(spans_records(test)), encoding="utf-8")
    labelled, pool, rng = list(seed_set), list(pool), random.Random(seed)
    rows = []
    for round_ in range(args.rounds + 1):
        started = time.perf_counter()
        run = work / f"round{round_}"
        if round_ == 0 and seed in first:
            run, f1 = first[seed]
        else:
            f1 = train_and_score(work, run, labelled, seed, args.epochs, work / "test.jsonl")
            first.setdefault(seed, (run, f1))
        rows.append({"strategy": strategy, "seed": seed, "round": round_, "labelled": len(labelled), "f1": f1,
                     "seconds": round(time.perf_counter() - started, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        if round_ == args.rounds:
            break
        chosen = set(choose(strategy, run, work, pool, args.budget, rng))
        # the annotator corrects the chosen tasks: their gold spans replace the pre-annotations
        labelled += [Example(e.text, e.gold, e.id) for e in pool if e.id in chosen]
        pool = [e for e in pool if e.id not in chosen]
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-size", type=int, default=200, help="labelled texts to start from")
    parser.add_argument("--pool", type=int, default=4000, help="unlabelled texts to choose from")
    parser.add_argument("--budget", type=int, default=200, help="texts labelled a round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="training seeds (and random draws)")
    parser.add_argument("--dev", type=int, default=300, help="CLUENER dev texts that select each run's best epoch")
    parser.add_argument("--test", type=int, default=None, help="held-out dev texts scored (default: the rest)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--out", type=Path, default=Path("runs/active_learning"))
    args = parser.parse_args(argv)
    _common.header("Active learning on CLUENER: uncertainty ranking vs random choice")
    data = corpus(_common.data_root(), args.seed_size, args.pool, args.dev, args.test)
    print(f"seed set {len(data[0])}, pool {len(data[1])}, selection dev {len(data[2])}, held-out test {len(data[3])}")
    first: dict[int, tuple[Path, float]] = {}
    rows = [row for seed in args.seeds for strategy in STRATEGIES for row in loop(strategy, seed, args, data, args.out, first)]
    print_table(rows, args.seeds)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return rows


def print_table(rows: list[dict[str, Any]], seeds: list[int]) -> None:
    rounds = sorted({r["round"] for r in rows})
    print("\n| round | labelled | " + " | ".join(f"{s} (mean F1)" for s in STRATEGIES) + " | per seed |")
    print("| ---: | ---: | " + " | ".join("---:" for _ in STRATEGIES) + " | --- |")
    for round_ in rounds:
        here = [r for r in rows if r["round"] == round_]
        means = [sum(r["f1"] for r in here if r["strategy"] == s) / len(seeds) for s in STRATEGIES]
        detail = "; ".join(f"{s[0]}{r['seed']} {r['f1']:.4f}" for s in STRATEGIES for r in here if r["strategy"] == s)
        print(f"| {round_} | {here[0]['labelled']} | " + " | ".join(f"{m:.4f}" for m in means) + f" | {detail} |")


if __name__ == "__main__":
    main()
