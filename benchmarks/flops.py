"""Achieved FLOP/s in training against a plain large matmul on the same machine.

Counts the floating-point operations of bert-base + CRF training steps on real CLUENER
batches (torch.utils.flop_counter: matmuls and attention, forward and backward), times the
same steps as the trainer runs them, and divides; the practical limit is one 2048^3 matmul
(bf16 where the CPU has bf16 matrix units, else float32). From the step time it extrapolates
a full CLUENER epoch (10,748 texts, 448 batches of 24): a fraction of the epoch is timed.

    flock /tmp/nlpfw-cpu.lock .venv/bin/python benchmarks/flops.py [--steps 10] [--profile]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from nlpfw.device import amp_dtype, autocast, keep_freed_memory  # noqa: E402
from nlpfw.dropout import use_fast_dropout  # noqa: E402
from nlpfw.sampler import LengthBucketSampler  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also show where 3 steps spend their time")
    args = parser.parse_args()
    _common.header("achieved training FLOP/s vs a plain matmul (bert-base + CRF, batch 24, CLUENER)")
    keep_freed_memory()
    device = torch.device("cpu")
    amp = amp_dtype(device, True)
    limit_dtype = amp or torch.float32
    recipe, _ = _common.recipe("crf.v1")
    model, task, splits = _common.build(recipe, ("train",))
    train = splits["train"]
    sampler = LengthBucketSampler(train.window_length, 24, torch.Generator().manual_seed(42))
    plan = list(sampler)
    batches = [task.collate([train[i] for i in b]) for b in plan[: args.steps + args.warmup]]
    optimizer = torch.optim.AdamW(model.param_groups(3e-5, 0.01), lr=3e-5, fused=True)
    use_fast_dropout(model)  # as the trainer does on a CPU (trainer.fast_dropout)
    model.train()

    def step(batch) -> None:
        with autocast(device, amp):
            loss = model(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in batches[: args.warmup]:
        step(batch)
    start = time.perf_counter()
    for batch in batches[args.warmup :]:
        step(batch)
    seconds = time.perf_counter() - start
    flops = 0
    for batch in batches[args.warmup :]:
        with FlopCounterMode(display=False) as counter:
            step(batch)
        flops += counter.get_total_flops()
    achieved = flops / seconds
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches[args.warmup : args.warmup + 3]:
                step(batch)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=36))
    limit = _common.matmul_rate(limit_dtype, 2048)
    per_step = seconds / args.steps
    epoch_batches = math.ceil(len(train) / 24)
    chars = sum(int(b["mask"].sum()) for b in batches[args.warmup :])
    epoch_chars = int(train.window_length.sum())
    epoch = per_step * epoch_batches
    print(f"{args.steps} steps: {per_step * 1000:.0f} ms a step, {flops / args.steps / 1e12:.3f} TFLOP a step, "
          f"{chars / seconds:.0f} characters/s (amp {amp})")  # fmt: skip
    print(f"achieved {achieved / 1e12:.3f} TFLOP/s; plain {limit_dtype} 2048^3 matmul {limit / 1e12:.3f} TFLOP/s; "
          f"fraction {achieved / limit:.2f}")  # fmt: skip
    by_chars = epoch_chars / (chars / seconds)
    print(f"CLUENER epoch ({len(train):,} texts, {epoch_batches} batches) extrapolated from {args.steps} of its "
          f"batches: {epoch / 60:.1f} min by step time, {by_chars / 60:.1f} min by characters/s")  # fmt: skip


if __name__ == "__main__":
    main()
