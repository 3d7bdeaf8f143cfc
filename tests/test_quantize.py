"""`nlpfw export --quantize int8`: an int8 graph whose tags are checked against the float model's,
refused when too many differ."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_export import onnx_spans
from test_predict import MIXED

import nlpfw
from nlpfw import quantize
from nlpfw.cli import cli

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def int8(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "tagger-int8.onnx"
    result = CliRunner().invoke(cli, ["export", str(run_dir), "--onnx", str(out), "--quantize", "int8"],
                                catch_exceptions=False)  # fmt: skip
    return result, out


def test_int8_export_writes_a_checked_smaller_graph(int8, run_dir, data_root):
    from nlpfw_plugins.cluener import Cluener, CluenerConfig

    result, out = int8
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert f"Wrote {out} (int8, " in flat
    check = json.loads(out.with_name(out.name + ".json").read_text(encoding="utf-8"))["quantization"]
    assert check["type"] == "int8" and check["check"]["texts"] == len(quantize.CHECK_TEXTS)
    assert check["check"]["chars"] > sum(len(t) for t in quantize.CHECK_TEXTS)  # the long one's windows overlap
    assert 0 <= check["check"]["changed"] <= 0.02 * check["check"]["chars"]
    assert (f"int8: {check['check']['changed']:,} of {check['check']['chars']:,} characters of the check batch"
            in flat and "(allowed: 2.00%)" in flat)  # fmt: skip
    assert sorted(p.name for p in out.parent.iterdir()) == ["tagger-int8.onnx", "tagger-int8.onnx.json"]  # no float left
    model = nlpfw.load(run_dir)
    # int8 weights: the graph is much smaller than the float one (embeddings stay float, as onnxruntime keeps Gather)
    float_bytes = sum(p.numel() * 4 for p in model.model.parameters())
    assert out.stat().st_size < 0.75 * float_bytes
    texts = [e.text for e in Cluener(CluenerConfig(limit=200), data_root).load("dev")] + MIXED
    got = onnx_spans(model, out, texts)
    expected = model.predictions(texts)
    same = sum(a == b for a, b in zip(got, expected))
    assert same >= 0.9 * len(texts), f"int8 entities equal the float model's on only {same} of {len(texts)} texts"
    for text, spans in zip(texts, got):
        assert all(0 <= s.start < s.end <= len(text) for s in spans)


def test_int8_is_refused_when_too_many_tags_change(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(quantize, "tag_changes", lambda loaded, graph, texts: (30, 1000))
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(cli, ["export", str(run_dir), "--onnx", str(out), "--quantize", "int8",
                                      "--max-tag-change", "0.01"])  # fmt: skip
    assert result.exit_code == 1
    assert (f"Error: the int8 graph tags 30 of the check batch's 1,000 characters (3.00%) differently from the "
            f"float model, over --max-tag-change 1.00%; {out} was not written. Keep the float32 export, or allow "
            "more with --max-tag-change") in " ".join(result.output.split())  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # neither the graph, nor its float32 step, nor a sidecar
    result = CliRunner().invoke(cli, ["export", str(run_dir), "--onnx", str(out), "--quantize", "int8",
                                      "--max-tag-change", "0.05"])  # fmt: skip
    assert result.exit_code == 0, result.output  # 3% is within 5%
    assert out.is_file()


def test_the_check_batch_can_be_the_users(run_dir, tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    for path, message in ((tmp_path / "none.txt", f"Error: --check-input: file not found: {tmp_path / 'none.txt'}"),
                          (tmp_path / "empty.txt", f"Error: --check-input {tmp_path / 'empty.txt'}: no texts in it")):  # fmt: skip
        result = CliRunner().invoke(cli, ["export", str(run_dir), "--onnx", str(tmp_path / "x.onnx"), "--quantize",
                                          "int8", "--check-input", str(path)])  # fmt: skip
        assert result.exit_code == 1 and message in result.output
    assert quantize.check_texts(None) == list(quantize.CHECK_TEXTS)
    (tmp_path / "mine.txt").write_text("张三在北京\n\n李四在上海\n", encoding="utf-8")
    assert quantize.check_texts(tmp_path / "mine.txt") == ["张三在北京", "李四在上海"]
    model = nlpfw.load(run_dir)
    float_graph = tmp_path / "float.onnx"
    CliRunner().invoke(cli, ["export", str(run_dir), "--onnx", str(float_graph)], catch_exceptions=False)
    assert quantize.tag_changes(model, float_graph, ["张三在北京", "李四在上海"]) == (0, 10)  # float: exact
