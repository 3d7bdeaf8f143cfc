"""Prediction throughput: `nlpfw.load(...).predict` against transformers' token-classification
pipeline, same model size and texts.

A bert-base-sized model (random weights, the real bert-base-chinese vocabulary) is saved as an
nlpfw model folder (BERT + CRF) and loaded with `nlpfw.load`; the baseline is
`pipeline("token-classification")` over `BertForTokenClassification` of the same size with the
vocabulary's tokenizer. Both predict CLUENER2020 dev texts (in file order) at batch 64 in
float32 on the CPU; texts per second.

    flock /tmp/nlpfw-cpu.lock .venv/bin/python benchmarks/predict_throughput.py [--texts 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    _common.header(f"prediction throughput: nlpfw.load(...).predict vs transformers pipeline, batch {args.batch}")
    import transformers
    from transformers import BertConfig, BertForTokenClassification, pipeline

    import nlpfw
    from nlpfw.model import save_model

    recipe, _ = _common.recipe("crf.v1")
    model, task, splits = _common.build(recipe, ("dev",))
    texts = [e.text for e in splits["dev"].examples][: args.texts]
    chars = sum(len(t) for t in texts)
    with tempfile.TemporaryDirectory() as folder:
        save_model(Path(folder), model, task, recipe)
        loaded = nlpfw.load(folder)
        loaded.predict(texts[: args.batch])  # warm-up
        start = time.perf_counter()
        loaded.predict(texts, batch_size=args.batch)
        ours = time.perf_counter() - start
    bert = model.encoder.bert.config
    config = BertConfig(
        vocab_size=bert.vocab_size, hidden_size=bert.hidden_size, num_hidden_layers=bert.num_hidden_layers,
        num_attention_heads=bert.num_attention_heads, intermediate_size=bert.intermediate_size,
        num_labels=len(task.tags),
    )  # fmt: skip
    torch.manual_seed(0)
    baseline = pipeline(
        "token-classification", model=BertForTokenClassification(config).eval(), tokenizer=model.encoder.tokenizer,
        device=-1,
    )  # fmt: skip
    baseline(texts[: args.batch], batch_size=args.batch)  # warm-up
    start = time.perf_counter()
    baseline(texts, batch_size=args.batch)
    theirs = time.perf_counter() - start
    print(f"{len(texts)} CLUENER dev texts, {chars:,} characters, transformers {transformers.__version__}")
    print(f"nlpfw.load(...).predict    {len(texts) / ours:7.1f} texts/s ({ours:.1f} s)")
    print(f"pipeline(token-classification) {len(texts) / theirs:7.1f} texts/s ({theirs:.1f} s)")
    print(f"nlpfw / pipeline: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
