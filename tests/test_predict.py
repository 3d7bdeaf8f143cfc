"""Using a trained run folder: nlpfw.load, `nlpfw predict`, `nlpfw evaluate`, the CLUENER submission."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import nlpfw
from nlpfw.cli import cli
from nlpfw_plugins.span_metrics import score_spans
from nlpfw_plugins.cluener import ENTITY_TYPES, Cluener, CluenerConfig

MIXED = [
    "我用iPhone6s 在CSOL里打了1234567890分！",
    "ＦＵＬＬ宽 ok😀表情 Café\u3000北京市海淀区中关村大街27号",
    "",
    "  前后有空格的文本  ",
    "2019年5月，张伟在上海浦东新区的华为公司担任高级工程师。",
]


@pytest.fixture(scope="module")
def dev(data_root):
    return Cluener(CluenerConfig(limit=400), data_root).load("dev")


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def check_offsets(text: str, entities: list[dict]) -> None:
    for entity in entities:
        assert set(entity) == {"type", "text", "start", "end"}
        assert 0 <= entity["start"] < entity["end"] <= len(text)
        assert text[entity["start"] : entity["end"]] == entity["text"]


def test_load_predicts_offline_with_no_data(run_dir, dev, monkeypatch, tmp_path):
    monkeypatch.setenv("NLPFW_DATA_ROOT", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = nlpfw.load(run_dir)
    texts = [e.text for e in dev] + MIXED
    predicted = [r["entities"] for r in model.predict(texts)]
    assert len(predicted) == len(texts) and predicted[len(dev) + 2] == []  # the empty text
    assert sum(len(p) for p in predicted) > 100
    for text, entities in zip(texts, predicted):
        check_offsets(text, entities)
    # the records are the spans, and score exactly what the run reported
    spans = model.predictions([e.text for e in dev])
    assert [[(s.label, s.start, s.end) for s in x] for x in spans] == [
        [(e["type"], e["start"], e["end"]) for e in x] for x in predicted[: len(dev)]
    ]
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    assert score_spans([e.gold for e in dev], spans).overall.f1 == report["best"]["scores"]["overall"]["f1"]
    # the model folder itself loads too; a single string is a mistake, not 30 one-character texts
    assert nlpfw.load(run_dir / "model").predict(MIXED) == [{"text": t, "entities": e} for t, e in zip(MIXED, predicted[len(dev) :])]
    with pytest.raises(TypeError, match="a list of texts"):
        model.predict("张三")


def test_predict_texts_on_the_command_line(run_dir):
    result = invoke("predict", run_dir, *MIXED)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["text"] for r in records] == MIXED
    for record in records:
        check_offsets(record["text"], record["entities"])
    assert records == nlpfw.load(run_dir).predict(MIXED)  # the same records as the Python API


def test_predict_files_keep_input_order_and_ids(run_dir, dev, tmp_path):
    texts = [e.text for e in dev[:50]] + MIXED  # lengths vary: batches are sorted, output is not
    plain = tmp_path / "texts.txt"
    plain.write_text("\n".join(t.replace("\u3000", " ") for t in texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = invoke("predict", run_dir, "--input", plain, "--output", out)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == [t.replace("\u3000", " ") for t in texts]
    expected = nlpfw.load(run_dir).predict([r["text"] for r in records])
    assert records == expected

    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"x{i}", "text": t}, ensure_ascii=False) + "\n"
                             for i, t in enumerate(texts)), encoding="utf-8")  # fmt: skip
    result = invoke("predict", run_dir, "--input", jsonl, "--output", out)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == [f"x{i}" for i in range(len(texts))]
    assert [r["text"] for r in records] == texts
    for record in records:
        check_offsets(record["text"], record["entities"])

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "好"}\n{"txt": "坏"}\n', encoding="utf-8")
    result = invoke("predict", run_dir, "--input", bad)
    assert result.exit_code == 1 and f'Error: {bad}:2: expected an object with a string "text"' in result.output


def test_cluener_submission(run_dir, data_root, tmp_path):
    out = tmp_path / "cluener_predict.json"
    result = invoke("predict", run_dir, "--cluener-submission", "--output", out)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    test = Cluener(CluenerConfig(limit=400), data_root).load("test")
    assert [line["id"] for line in lines] == [e.id for e in test] == list(range(400))
    found = 0
    for line, example in zip(lines, test):
        assert set(line) == {"id", "label"}
        for kind, entities in line["label"].items():
            assert kind in ENTITY_TYPES
            for surface, positions in entities.items():
                for start, end in positions:  # CLUENER's inclusive ends
                    assert example.text[start : end + 1] == surface
                    found += 1
    assert found > 50


def test_evaluate_prints_the_tables_for_a_split_or_a_file(run_dir, dev, tmp_path):
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    f1 = report["best"]["scores"]["overall"]["f1"]
    out = tmp_path / "scores.json"
    result = invoke("evaluate", run_dir, "--output", out)
    assert result.exit_code == 0, result.output
    assert f"cluener.v1 dev: 400 texts, F1 {f1:.4f}" in result.output
    for heading in ("Speed", "Model (dev)", "Per-entity F1 (dev)", "bert-base-chinese+CRF"):
        assert heading in result.output
    assert json.loads(out.read_text(encoding="utf-8"))["scores"]["overall"]["f1"] == f1

    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text("".join(json.dumps({"text": e.text, "spans": [{"start": s.start, "end": s.end, "label": s.label}
                                                                   for s in e.gold]}, ensure_ascii=False) + "\n"
                             for e in dev), encoding="utf-8")  # fmt: skip
    result = invoke("evaluate", run_dir, "--data", jsonl)
    assert result.exit_code == 0, result.output
    assert f"{jsonl}: 400 texts, F1 {f1:.4f}" in " ".join(result.output.split())

    result = invoke("evaluate", run_dir, "--split", "test")
    assert result.exit_code == 1 and "has no labelled texts to score; use `nlpfw predict`" in result.output
    result = invoke("evaluate", run_dir, "--split", "valid")
    assert result.exit_code == 1 and "--split: cluener.v1 has no split 'valid'; splits: train, dev, test" in result.output
    result = invoke("evaluate", tmp_path)
    assert result.exit_code == 1 and "not a run folder or a model folder" in result.output
