"""CRF decoding: nlpfw's tensor Viterbi (plugins/crf.py) against pytorch-crf's `decode`.

Same CRF parameters and emissions (batch 64, 50 characters, 41 tags: CLUENER's BIO tags with
room to spare), float32, on the CPU; the paths are checked to be identical first. Timed with
every row full and with rows of random lengths (the mask), and with BIO constraints on.

    flock /tmp/nlpfw-cpu.lock .venv/bin/python benchmarks/crf_decode.py [--batch 64 --length 50 --tags 41]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torchcrf import CRF

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from nlpfw_plugins.crf import BioConstraints, viterbi  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--tags", type=int, default=41)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    _common.header(f"CRF decode: batch {args.batch}, length {args.length}, {args.tags} tags, float32")
    generator = torch.Generator().manual_seed(0)
    crf = CRF(args.tags, batch_first=True)
    with torch.no_grad():
        for param in (crf.start_transitions, crf.end_transitions, crf.transitions):
            param.copy_(torch.randn(param.shape, generator=generator))
    emissions = torch.randn(args.batch, args.length, args.tags, generator=generator)
    lengths = torch.randint(1, args.length + 1, (args.batch,), generator=generator)
    lengths[0] = args.length
    masks = {
        "full rows": torch.ones(args.batch, args.length, dtype=torch.bool),
        "random lengths": torch.arange(args.length) < lengths.unsqueeze(1),
    }
    labels = ["O"] + [f"{p}-T{i}" for i in range((args.tags - 1) // 2) for p in "BI"]
    labels += [f"B-X{i}" for i in range(args.tags - len(labels))]
    constraints = BioConstraints(args.tags)
    constraints.set_labels(labels)
    print(f"{'mask':16s} {'pytorch-crf':>12s} {'nlpfw':>10s} {'constrained':>12s} {'speed-up':>9s}")
    with torch.no_grad():
        for name, mask in masks.items():
            expected = crf.decode(emissions, mask)
            ours = viterbi(crf, emissions, mask)
            assert all(ours[i, : len(p)].tolist() == p for i, p in enumerate(expected)), "paths differ"
            theirs = _common.timed(lambda: crf.decode(emissions, mask), args.repeat)
            mine = _common.timed(lambda: viterbi(crf, emissions, mask), args.repeat)
            constrained = _common.timed(lambda: viterbi(crf, emissions, mask, constraints), args.repeat)
            print(f"{name:16s} {theirs * 1000:10.2f}ms {mine * 1000:8.2f}ms {constrained * 1000:10.2f}ms "
                  f"{theirs / mine:8.1f}x")  # fmt: skip
    print("paths identical to pytorch-crf's on both masks")


if __name__ == "__main__":
    main()
