"""Training throughput: nlpfw's Trainer against Hugging Face's Trainer, same model and data.

Both train a bert-base-sized model (random weights, the real bert-base-chinese vocabulary) on
CLUENER2020's training texts at batch 24 (or, with `--size quickstart`, the quickstart's own
model and batch) for the same number of optimizer steps, each side in a fresh process. nlpfw trains BERT + CRF (crf.v1, the harder head) with its defaults
(length-bucketed batches, bf16 autocast on CPUs with bf16 matrix units); Hugging Face trains
`BertForTokenClassification` (softmax head) with `bf16=True` where nlpfw uses bf16 autocast, with its
default random batches and with `train_sampling_strategy="group_by_length"`. Throughput is
real characters (not padding) per second over the steps after the warm-up.

    flock /tmp/nlpfw-cpu.lock .venv/bin/python benchmarks/train_throughput.py [--size quickstart] [--steps 16 --warmup 4]
        [--rounds 3] [--sides ours hf-grouped]

With `--rounds N` every side runs N times, the sides alternating round by round, and each
side's figure is its median: on a shared machine whose speed drifts, one pass of the sides one
after the other can favour whichever ran in a fast minute.

Needs the `bench` extra (accelerate, for Hugging Face's Trainer): pip install -e ".[bench]"
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def ours(steps: int, warmup: int, decoder: str, size: str) -> dict:
    recipe, _ = _common.recipe(decoder, size, max_steps=steps, epochs=1, log_every=1000, checkpoint_every=100000)
    trainer, train, stamps, _ = _common.timed_training(recipe)
    chars = [int(train.window_length[batch].sum()) for batch in trainer.sampler.batches[:steps]]
    return {"seconds": stamps[-1] - stamps[warmup - 1], "chars": sum(chars[warmup:]), "amp": str(trainer.amp)}


def hugging_face(steps: int, warmup: int, grouped: bool, size: str) -> dict:
    import torch
    import transformers
    from transformers import BertConfig, BertForTokenClassification, Trainer, TrainerCallback, TrainingArguments

    from nlpfw.device import amp_dtype

    recipe, _ = _common.recipe("softmax.v1", size)
    model, task, splits = _common.build(recipe, ("train",))
    train = splits["train"]
    encoder = model.encoder
    rows = []
    for i in range(len(train)):
        item = train[i]
        ids = [encoder.cls_id, *item["input_ids"].tolist(), encoder.sep_id]
        rows.append({"input_ids": ids, "labels": [-100, *item["tags"].tolist(), -100]})
    config = BertConfig(
        vocab_size=encoder.bert.config.vocab_size, num_labels=len(task.tags),
        **{k: v for k, v in encoder.bert.config.to_dict().items() if k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings")},
    )  # fmt: skip
    torch.manual_seed(42)
    hf_model = BertForTokenClassification(config)
    collate = transformers.DataCollatorForTokenClassification(encoder.tokenizer)
    chars: list[int] = []

    def counting(features):
        chars.append(sum(len(f["input_ids"]) - 2 for f in features))
        return collate(features)

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    args = TrainingArguments(
        output_dir="/tmp/nlpfw-bench-hf", use_cpu=True, bf16=amp_dtype(torch.device("cpu"), recipe.trainer.amp) is not None,
        per_device_train_batch_size=recipe.trainer.batch_size,
        max_steps=steps, learning_rate=recipe.trainer.lr, warmup_steps=0, logging_steps=100000, save_strategy="no",
        report_to="none", disable_tqdm=True, seed=42, remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if grouped else "random",
    )  # fmt: skip
    Trainer(model=hf_model, args=args, train_dataset=rows, data_collator=counting, callbacks=[Stamp()]).train()
    return {"seconds": stamps[-1] - stamps[warmup - 1], "chars": sum(chars[warmup:steps])}


SIDES = {
    "ours": "nlpfw (crf.v1)",
    "ours-softmax": "nlpfw (softmax.v1)",
    "hf": "HF Trainer (random batches)",
    "hf-grouped": "HF Trainer (group_by_length)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=4, help="untimed first steps")
    parser.add_argument("--size", choices=_common.SIZES, default="bert-base",
                        help="bert-base: 12 layers, 768 wide, batch 24; quickstart: recipes/quickstart.toml as it is "
                             "(2 layers, 128 wide, batch 32)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating; the median is shown")
    parser.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES), help="the sides to run")
    parser.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        if args.side.startswith("ours"):
            result = ours(args.steps, args.warmup, "softmax.v1" if args.side == "ours-softmax" else "crf.v1", args.size)
        else:
            result = hugging_face(args.steps, args.warmup, args.side == "hf-grouped", args.size)
        _common.print_result(result)
        return
    recipe, _ = _common.recipe("crf.v1", args.size)
    bert = recipe.encoder.config
    _common.header(f"training throughput: nlpfw Trainer vs Hugging Face Trainer ({args.size} size: {bert.num_layers} "
                   f"layers, hidden {bert.hidden_size}, batch {recipe.trainer.batch_size})")  # fmt: skip
    print(f"{args.steps} optimizer steps each, the first {args.warmup} untimed; each side in a fresh process"
          + (f"; {args.rounds} rounds, the sides alternating, medians shown" if args.rounds > 1 else ""))
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--size", args.size]
    runs = _common.fresh_runs(__file__, {side: ["--side", side, *common] for side in args.sides}, args.rounds)
    rates = {}
    for side, results in runs.items():
        each = [result["chars"] / result["seconds"] for result in results]
        rates[side] = statistics.median(each)
        step = statistics.median(result["seconds"] for result in results) / (args.steps - args.warmup)
        spread = f"   (runs: {' '.join(f'{rate:.0f}' for rate in each)})" if len(each) > 1 else ""
        print(f"{SIDES[side]:30s} {rates[side]:8.0f} chars/s   {step * 1000:6.0f} ms/step{spread}")
    for side in rates:
        if side.startswith("ours"):
            against = [f"{rates[side] / rates[hf]:.2f}x ({'random batches' if hf == 'hf' else 'group_by_length'})"
                       for hf in ("hf", "hf-grouped") if hf in rates]  # fmt: skip
            if against:
                print(f"{SIDES[side]} / HF Trainer: {', '.join(against)}")

if __name__ == "__main__":
    main()
