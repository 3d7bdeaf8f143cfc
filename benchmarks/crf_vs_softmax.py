"""CRF head against softmax head: training step time of bert-base + crf.v1 vs + softmax.v1.

The same encoder weights, the same real CLUENER batches (batch 24, length-bucketed, as the
trainer makes them) and the trainer's step (bf16 autocast where the CPU has bf16 matrix
units, the CRF in float32, fused AdamW, clipping); steps of the two models alternate so that
drift in the machine's speed hits both. Then the heads alone (loss forward + backward on the
encoder's output), where pytorch-crf's loss spends its time, and its loss against nlpfw's.

    flock /tmp/nlpfw-cpu.lock .venv/bin/python benchmarks/crf_vs_softmax.py [--steps 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from nlpfw.device import amp_dtype, autocast, keep_freed_memory  # noqa: E402
from nlpfw.dropout import use_fast_dropout  # noqa: E402
from nlpfw.sampler import LengthBucketSampler  # noqa: E402
from nlpfw_plugins.crf import log_likelihood  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per head")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    _common.header("CRF head vs softmax head: bert-base training step, batch 24, CLUENER")
    keep_freed_memory()
    device = torch.device("cpu")
    recipe, _ = _common.recipe("crf.v1")
    crf_model, task, splits = _common.build(recipe, ("train",))
    softmax_recipe, _ = _common.recipe("softmax.v1")
    softmax_model, _, _ = _common.build(softmax_recipe, ("train",))
    softmax_model.encoder.load_state_dict(crf_model.encoder.state_dict())
    amp = amp_dtype(device, True)
    train = splits["train"]
    sampler = LengthBucketSampler(train.window_length, 24, torch.Generator().manual_seed(42))
    batches = [task.collate([train[i] for i in b]) for b in list(sampler)[: args.steps + args.warmup]]
    models = {"crf.v1": crf_model, "softmax.v1": softmax_model}
    for model in models.values():
        use_fast_dropout(model)  # as the trainer does on a CPU (trainer.fast_dropout)
    optimizers = {
        name: torch.optim.AdamW(m.param_groups(3e-5, 0.01), lr=3e-5, fused=True) for name, m in models.items()
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    for index, batch in enumerate(batches):
        for name, model in models.items():
            model.train()
            start = time.perf_counter()
            with autocast(device, amp):
                loss = model(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            if index >= args.warmup:
                times[name].append(time.perf_counter() - start)
    step = {name: sum(t) / len(t) for name, t in times.items()}
    chars = sum(int(b["mask"].sum()) for b in batches[args.warmup :]) / args.steps
    print(f"training step ({args.steps} steps each, {chars:.0f} characters a batch on average, amp {amp}):")
    for name, seconds in step.items():
        print(f"  bert-base + {name:11s} {seconds * 1000:7.0f} ms")
    print(f"  CRF / softmax: {step['crf.v1'] / step['softmax.v1']:.3f}x")

    # the heads alone, on the encoder's output for one batch
    batch = batches[args.warmup]
    hidden = torch.randn(*batch["input_ids"].shape, 768, requires_grad=True)
    print(f"heads alone, loss forward + backward on hidden {tuple(hidden.shape)}:")
    for name, model in models.items():
        decoder = model.decoder

        def head() -> None:
            decoder.loss(hidden, batch["tags"], batch["mask"]).backward()

        print(f"  {name:11s} {_common.timed(head, 20, 3) * 1000:7.2f} ms")
    crf = crf_model.decoder.crf
    emissions = crf_model.decoder.emissions(hidden).detach().transpose(0, 1).contiguous()
    tags, mask = batch["tags"].T.contiguous(), batch["mask"].T.contiguous()
    with torch.no_grad():
        normalizer = _common.timed(lambda: crf._compute_normalizer(emissions, mask), 20, 3)
        score = _common.timed(lambda: crf._compute_score(emissions, tags, mask), 20, 3)
    print(f"  pytorch-crf forward: _compute_normalizer {normalizer * 1000:.2f} ms, _compute_score {score * 1000:.2f} ms")
    emissions = crf_model.decoder.emissions(hidden).detach().requires_grad_(True)
    tags, mask = batch["tags"], batch["mask"]
    theirs = _common.timed(lambda: (-crf(emissions, tags, mask=mask, reduction="mean")).backward(), 20, 3)
    ours = _common.timed(lambda: (-log_likelihood(crf, emissions, tags, mask).mean()).backward(), 20, 3)
    print(f"  CRF loss forward + backward: pytorch-crf {theirs * 1000:.2f} ms, nlpfw log_likelihood "
          f"{ours * 1000:.2f} ms ({theirs / ours:.1f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
