"""`nlpfw export --onnx`: one graph, CRF included, that onnxruntime runs to exactly the model's entities."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner
from test_predict import MIXED, check_offsets

import nlpfw
from nlpfw.cli import cli
from nlpfw.errors import NlpfwError
from nlpfw.export import OnnxModel, export_onnx
from nlpfw.interfaces import Example
from nlpfw.model import predict_split
from nlpfw_plugins.cluener import Cluener, CluenerConfig


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tagger.onnx"
    result = CliRunner().invoke(cli, ["export", str(run_dir), "--onnx", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"Wrote {out}" in " ".join(result.output.split())
    return out


def onnx_spans(model, path, texts):
    spans, _, _ = predict_split(OnnxModel(path, model.model.decoder), model.task, model.encode([Example(t) for t in texts]), 64, model.device)
    return spans


def test_export_writes_the_graph_and_its_labels(exported, run_dir):
    model = nlpfw.load(run_dir)
    sidecar = json.loads(exported.with_name("tagger.onnx.json").read_text(encoding="utf-8"))
    assert sidecar["labels"] == model.task.tags and sidecar["labels"][0] == "O"
    assert sidecar["task_labels"] == model.task.entity_types and sidecar["target"] == "tags" and sidecar["output"] == "tags"
    assert sidecar["decoder"] == "crf.v1" and sidecar["max_chars"] == model.model.encoder.max_chars
    assert sidecar["window"] == model.model.encoder.max_chars and 0 < sidecar["stride"] < sidecar["window"]
    assert exported.stat().st_size > 100_000  # the weights are inside the one file
    assert not list(exported.parent.glob("*.tmp*"))


def test_onnx_gives_exactly_the_models_entities_on_cluener_dev(exported, run_dir, data_root):
    model = nlpfw.load(run_dir)
    dev = Cluener(CluenerConfig(), data_root).load("dev")  # all 1,343 texts
    # mixed scripts, an empty text, and texts longer than the 126-character window
    long_texts = [("张伟在上海浦东新区的华为公司担任高级工程师。" * 20)[:n] for n in (127, 300, 1000)]
    texts = [e.text for e in dev] + MIXED + long_texts
    expected = model.predictions(texts)
    got = onnx_spans(model, exported, texts)
    assert got == expected
    assert sum(len(s) for s in got[: len(dev)]) > 300  # a trained model: real entities to compare
    for text, spans in zip(texts, got):
        check_offsets(text, [{"type": s.label, "text": text[s.start : s.end], "start": s.start, "end": s.end}
                             for s in spans])  # fmt: skip


def test_export_errors(run_dir, tmp_path, registry, monkeypatch):
    result = CliRunner().invoke(cli, ["export", str(tmp_path), "--onnx", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1
    assert f"Error: {tmp_path}: not a run folder or a model folder (no model.safetensors" in result.output
    assert not (tmp_path / "x.onnx").exists()

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: importing it fails
    with pytest.raises(NlpfwError, match=r"ONNX export needs onnx, onnxscript, onnxruntime: pip install 'nlpfw\[onnx\]'"):
        export_onnx(run_dir, tmp_path / "x.onnx", registry)
    assert not (tmp_path / "x.onnx").exists()


def test_a_decoder_that_cannot_be_exported_is_refused(run_dir, tmp_path, registry, monkeypatch):
    from nlpfw_plugins.crf import CrfDecoder

    monkeypatch.setattr(CrfDecoder, "exportable", False)  # as a span decoder declares
    with pytest.raises(NlpfwError, match=r"crf.v1 cannot be exported to ONNX: its output \(tags\) has a size that depends on the data$"):
        export_onnx(run_dir, tmp_path / "x.onnx", registry)
    assert not (tmp_path / "x.onnx").exists()
