"""int8 CPU inference: PyTorch float32 and dynamic int8 against ONNX float32 and int8 (onnxruntime's
dynamic quantization, what `nlpfw export --quantize int8` writes), on CLUENER dev.

For each model: texts/s of `predict_split` over the dev texts (batch 64, the same batching and
windowing for every runtime), dev F1, and the share of characters whose tag differs from the
PyTorch float32 model's. Models: a trained run folder (`--run`, e.g. the quickstart's) and, with
`--bert-base`, a bert-base-sized BERT + CRF with random weights (the real bert-base-chinese
vocabulary; its F1 means nothing, its speed and tag agreement do).

    flock /tmp/nlpfw-cpu.lock .venv/bin/python benchmarks/int8.py --run runs/quickstart --bert-base
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def measure(name: str, model_dir: Path, texts_limit: int, registry) -> None:
    import nlpfw
    from nlpfw.export import OnnxModel, export_onnx
    from nlpfw.model import infer, predict_split
    from nlpfw_plugins.span_metrics import score_spans
    from nlpfw_plugins.cluener import Cluener, CluenerConfig

    loaded = nlpfw.load(model_dir)
    dev = Cluener(CluenerConfig(), _common.data_root()).load("dev")[:texts_limit]
    split = loaded.encode(dev)
    chars = sum(len(e.text) for e in dev)
    quantized = copy.deepcopy(loaded.model)
    quantized = torch.ao.quantization.quantize_dynamic(quantized, {torch.nn.Linear}, dtype=torch.qint8)
    with tempfile.TemporaryDirectory() as folder:
        float_graph, int8_graph = Path(folder) / "f32.onnx", Path(folder) / "int8.onnx"
        export_onnx(model_dir, float_graph, registry)
        export_onnx(model_dir, int8_graph, registry, "int8", max_tag_change=1.0)
        runtimes = {
            "PyTorch float32": loaded.model,
            "PyTorch dynamic int8": quantized,
            "ONNX float32": OnnxModel(float_graph, loaded.model.decoder),
            "ONNX int8 (export --quantize int8)": OnnxModel(int8_graph, loaded.model.decoder),
        }
        sizes = {"ONNX float32": float_graph.stat().st_size, "ONNX int8 (export --quantize int8)": int8_graph.stat().st_size}
        print(f"\n{name}: {len(dev)} CLUENER dev texts, {chars:,} characters, batch 64")
        print(f"{'':36} {'texts/s':>8} {'vs torch':>8} {'dev F1':>7} {'ΔF1':>8} {'tags changed':>12} {'file MiB':>8}")
        base_tags = base_f1 = base_rate = None
        for label, runner in runtimes.items():
            predict_split(runner, loaded.task, loaded.encode(dev[:64]), 64, loaded.device)  # warm-up
            start = time.perf_counter()
            spans, _, _ = predict_split(runner, loaded.task, split, 64, loaded.device)
            elapsed = time.perf_counter() - start
            tags, _, _ = infer(runner, loaded.task, split, 64, loaded.device)
            f1 = score_spans([e.gold for e in dev], spans, loaded.task.entity_types).overall.f1
            rate = len(dev) / elapsed
            if base_tags is None:
                base_tags, base_f1, base_rate = tags, f1, rate
            changed = sum(int(np.count_nonzero(a != b)) for a, b in zip(base_tags, tags)) / sum(len(a) for a in tags)
            size = f"{sizes[label] / 2**20:8.1f}" if label in sizes else f"{'':8}"
            print(f"{label:36} {rate:8.1f} {rate / base_rate:7.2f}x {f1:7.4f} {f1 - base_f1:+8.4f} {changed:12.2%} {size}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a trained run folder (e.g. the quickstart's)")
    parser.add_argument("--bert-base", action="store_true", help="also a bert-base-sized model, random weights")
    parser.add_argument("--texts", type=int, default=1343, help="CLUENER dev texts for the run folder (all: 1343)")
    parser.add_argument("--bert-base-texts", type=int, default=320)
    args = parser.parse_args()
    _common.header("int8 CPU inference: PyTorch float32 / dynamic int8 vs ONNX float32 / int8 (onnxruntime)")
    print(f"CPU: {_common.cpu_class()}")
    import onnxruntime

    from nlpfw.cli import _quiet_transformers
    from nlpfw.model import save_model

    _quiet_transformers()
    print(f"onnxruntime {onnxruntime.__version__}")
    recipe, registry = _common.recipe("crf.v1")
    if args.run:
        measure(f"trained run {args.run}", args.run, args.texts, registry)
    if args.bert_base:
        model, task, _ = _common.build(recipe, ("dev",))
        with tempfile.TemporaryDirectory() as folder:
            save_model(Path(folder), model, task, recipe)
            del model
            measure("bert-base-sized BERT + CRF (random weights)", Path(folder), args.bert_base_texts, registry)


if __name__ == "__main__":
    main()
