"""Training step time of nlpfw's Trainer under different settings, side by side.

Each setting trains the benchmark model (`--size quickstart`: recipes/quickstart.toml as it is;
`bert-base`: the bert-base-sized model at batch 24) on CLUENER's training texts in a fresh
process, through the trainer's own steps; the first 10 steps are untimed (the first also
waits for a compiler when `trainer.compile = true`; that wait is printed apart). The settings
alternate for `--rounds` rounds, so that drift in the machine's speed hits all of them.

    flock /tmp/nlpfw-cpu.lock .venv/bin/python benchmarks/step_time.py --size quickstart \\
        trainer.fast_dropout=false trainer.fast_dropout=true

Each SETTING is one `--set`-style override, or several joined by commas
(`trainer.compile=true,trainer.fast_dropout=false`); `-` is the recipe as it is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

UNTIMED = 10


def one(size: str, steps: int, decoder: str, setting: str) -> dict:
    overrides = [] if setting == "-" else setting.split(",")
    recipe, _ = _common.recipe(decoder, size, overrides, max_steps=steps, epochs=1, log_every=1000, checkpoint_every=100000)
    trainer, train, stamps, start = _common.timed_training(recipe)
    chars = sum(int(train.window_length[batch].sum()) for batch in trainer.sampler.batches[UNTIMED:steps])
    seconds = stamps[-1] - stamps[UNTIMED - 1]
    return {"step": seconds / (steps - UNTIMED), "chars": chars / seconds, "untimed": stamps[UNTIMED - 1] - start,
            "amp": str(trainer.amp)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="*", metavar="SETTING")
    parser.add_argument("--size", choices=_common.SIZES, default="quickstart")
    parser.add_argument("--steps", type=int, default=70, help=f"optimizer steps, the first {UNTIMED} untimed")
    parser.add_argument("--decoder", default="crf.v1")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        _common.print_result(one(args.size, args.steps, args.decoder, args.one))
        return
    if not args.settings:
        parser.error("name at least one SETTING (- for the recipe as it is)")
    _common.header(f"training step time by setting ({args.size} size, {args.decoder})")
    print(f"{args.steps} steps each, the first {UNTIMED} untimed; each run in a fresh process; {args.rounds} rounds")
    common = ["--size", args.size, "--steps", str(args.steps), "--decoder", args.decoder]
    results = _common.fresh_runs(__file__, {setting: ["--one", setting, *common] for setting in args.settings}, args.rounds)
    first = None
    for setting, runs in results.items():
        step = statistics.median(r["step"] for r in runs)
        first = first or step
        each = " ".join(f"{r['step'] * 1000:.1f}" for r in runs)
        print(f"{setting:45s} {step * 1000:8.1f} ms/step (runs: {each}); first {UNTIMED} steps "
              f"{statistics.median(r['untimed'] for r in runs):.1f} s; amp {runs[0]['amp']}; {first / step:.2f}x the first")  # fmt: skip


if __name__ == "__main__":
    main()
