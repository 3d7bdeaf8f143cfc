"""The annotation loop's commands: `nlpfw predict --output-format label-studio|doccano`, `--rank
uncertainty` and `nlpfw convert`, on the session's trained run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import nlpfw
from nlpfw.cli import cli
from nlpfw.annotate import scored_predictions
from nlpfw_plugins.cluener import Cluener, CluenerConfig
from nlpfw_plugins.doccano import Doccano, DoccanoConfig
from nlpfw_plugins.label_studio import LabelStudio, LabelStudioConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MIXED = ["😀张伟在ＣＳＯＬ里 玩游戏🎮，住在\u3000北京市 海淀区。", "", "  前后有空格的文本  "]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def pool(data_root):
    return [e.text for e in Cluener(CluenerConfig(limit=150), data_root).load("test")] + MIXED


@pytest.fixture(scope="module")
def model(run_dir):
    return nlpfw.load(run_dir)


def test_label_studio_pre_annotations_import_back_as_the_same_spans(run_dir, model, pool, tmp_path):
    texts = tmp_path / "pool.jsonl"
    texts.write_text("".join(json.dumps({"id": f"p{i}", "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(pool)),
                     encoding="utf-8")  # fmt: skip
    out = tmp_path / "tasks.json"
    result = invoke("predict", run_dir, "--input", texts, "--output-format", "label-studio", "--model-version", "round-1",
                    "--output", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text(encoding="utf-8"))
    expected = model.predictions(pool)
    assert [t["data"] for t in tasks] == [{"text": t, "id": f"p{i}"} for i, t in enumerate(pool)]
    assert sum(len(s) for s in expected) > 20
    for task, spans in zip(tasks, expected):
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "round-1" and 0 <= prediction["score"] <= 1
        for region, span in zip(prediction["result"], spans):
            assert region["value"] == {"start": span.start, "end": span.end, "labels": [span.label],
                                       "text": task["data"]["text"][span.start : span.end]}  # fmt: skip
            assert region["type"] == "labels" and (region["from_name"], region["to_name"]) == ("label", "text")
            assert prediction["score"] <= region["score"] <= 1
        assert "annotations" not in task
    # the annotator accepts the pre-annotations as they are: Label Studio saves them as the annotation
    for task in tasks:
        task["annotations"] = [{"id": 1, "completed_by": 1, "was_cancelled": False, "result": task["predictions"][0]["result"]}]
    (tmp_path / "export.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    read = LabelStudio(LabelStudioConfig(path=str(tmp_path), train="export.json", dev="export.json"), tmp_path)
    back = read.read_all(tmp_path / "export.json", "test")
    assert [e.gold for e in back] == expected and [e.id for e in back] == [f"p{i}" for i in range(len(pool))]


def test_label_studio_pre_annotations_name_another_labeling_configs_control_and_field(run_dir, model, pool, tmp_path):
    # a project labelled with <Labels name="ner" toName="content"/> and <Text name="content" value="$body"/>
    out = tmp_path / "tasks.json"
    options = ["--option", "from_name=ner", "--option", "to_name=content", "--option", "text_field=body"]
    result = invoke("predict", run_dir, *pool[:5], "--output-format", "label-studio", *options, "--output", out)
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text(encoding="utf-8"))
    assert [t["data"] for t in tasks] == [{"body": t} for t in pool[:5]]
    regions = [region for task in tasks for region in task["predictions"][0]["result"]]
    assert regions and {(r["from_name"], r["to_name"]) for r in regions} == {("ner", "content")}
    for task in tasks:
        task["annotations"] = [{"id": 1, "result": task["predictions"][0]["result"]}]
    (tmp_path / "export.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    config = LabelStudioConfig(path=str(tmp_path), train="export.json", dev="export.json", text_field="body", from_name="ner")
    back = LabelStudio(config, tmp_path).read_all(tmp_path / "export.json", "test")
    assert [e.gold for e in back] == model.predictions(pool[:5])
    # convert reads that project's control and writes it again
    copy = tmp_path / "copy.json"
    result = invoke("convert", tmp_path / "export.json", copy, "--to", "label-studio", "--text-field", "body",
                    "--option", "from_name=ner", "--option", "to_name=content")  # fmt: skip
    assert result.exit_code == 0, result.output
    copied = json.loads(copy.read_text(encoding="utf-8"))
    assert [[(r["from_name"], r["to_name"], r["value"]) for r in t["annotations"][0]["result"]] for t in copied] == [
        [(r["from_name"], r["to_name"], r["value"]) for r in t["predictions"][0]["result"]] for t in tasks]
    # an option the writer does not take, and options with the JSON lines, are refused before predicting
    result = invoke("predict", run_dir, pool[0], "--output-format", "label-studio", "--option", "from=ner")
    assert result.exit_code != 0
    assert "--option from: the label-studio output takes no such option; it takes: text_field, from_name, to_name" in result.output
    result = invoke("predict", run_dir, pool[0], "--option", "from_name=ner")
    assert result.exit_code != 0 and "--option is for a tool's --output-format (label-studio)" in result.output
    result = invoke("predict", run_dir, pool[0], "--output-format", "doccano", "--option", "from_name=ner")
    assert result.exit_code != 0 and "the doccano output takes no such option; it takes: none" in result.output
    # --format is the input's form; a tool's name there points to --output-format
    result = invoke("predict", run_dir, pool[0], "--format", "label-studio")
    assert result.exit_code != 0, result.output
    assert ("'label-studio' is not one of auto, text, jsonl: --format is the form of --input; the output's format is "
            "--output-format (e.g. --output-format label-studio)") in result.output  # fmt: skip


def test_doccano_output_imports_back_as_the_same_spans(run_dir, model, pool, tmp_path):
    texts = tmp_path / "pool.txt"
    texts.write_text("\n".join(pool) + "\n", encoding="utf-8")
    out = tmp_path / "pool.jsonl"
    result = invoke("predict", run_dir, "--input", texts, "--output-format", "doccano", "--output", out)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["text"] for line in lines] == pool
    assert all(0 <= line["confidence"] <= 1 and len(line["entity_confidence"]) == len(line["label"]) for line in lines)
    back = Doccano(DoccanoConfig(path=str(tmp_path), train="pool.jsonl", dev="pool.jsonl"), tmp_path).load("train")
    assert [e.gold for e in back] == model.predictions(pool)


def test_rank_uncertainty_orders_texts_by_confidence(run_dir, model, pool, tmp_path):
    texts = tmp_path / "pool.txt"
    texts.write_text("\n".join(pool) + "\n", encoding="utf-8")
    out = tmp_path / "ranked.jsonl"
    result = invoke("predict", run_dir, "--input", texts, "--rank", "uncertainty", "--output", out)
    assert result.exit_code == 0, result.output
    assert "least confident first" in result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["text"] for r in records) == sorted(pool)
    confidences = [r["confidence"] for r in records]
    assert confidences == sorted(confidences) and 0 < confidences[0] < confidences[-1] <= 1
    expected = {r["text"]: r["entities"] for r in model.predict(pool)}
    for record in records:
        assert [{k: e[k] for k in ("type", "text", "start", "end")} for e in record["entities"]] == expected[record["text"]]
        assert all(record["confidence"] <= e["confidence"] <= 1 for e in record["entities"])
    assert next(r for r in records if r["text"] == "")["confidence"] == 1.0
    # label-studio output ranked the same way; plain jsonl without --rank is unchanged
    result = invoke("predict", run_dir, "--input", texts, "--rank", "uncertainty", "--output-format", "label-studio")
    tasks = json.loads(result.output)
    assert [t["data"]["text"] for t in tasks] == [r["text"] for r in records]
    assert [t["predictions"][0]["score"] for t in tasks] == confidences
    plain = invoke("predict", run_dir, *pool[:2])
    assert [json.loads(line) for line in plain.output.splitlines()] == model.predict(pool[:2])


def test_scores_of_long_texts_come_from_the_window_that_owns_each_character(model, pool):
    long = ["".join(pool[i : i + 6]) for i in range(0, 60, 6)]
    assert max(len(t) for t in long) > model.model.encoder.max_chars  # windowed
    scored = scored_predictions(model, long, batch_size=4)
    assert [s.prediction for s in scored] == model.predictions(long)
    assert [{"text": t, **s.fields} for t, s in zip(long, scored)] != model.predict(long)  # confidences added
    for text, item, record in zip(long, scored, model.predict(long)):
        entities = item.fields["entities"]
        assert [{k: e[k] for k in ("type", "text", "start", "end")} for e in entities] == record["entities"]
        assert all(item.score <= e["confidence"] <= 1 for e in entities)
    assert scored_predictions(model, long[:1])[0].score == scored[0].score  # batching changes nothing


def test_rank_needs_a_decoder_with_probabilities(model, monkeypatch):
    from types import SimpleNamespace

    from nlpfw.errors import NlpfwError
    from nlpfw.annotate import predictions

    span_decoder = SimpleNamespace(target="spans")
    recipe = SimpleNamespace(decoder=SimpleNamespace(type="global_pointer.v1"), task=SimpleNamespace(type="ner.v1"))
    fake = SimpleNamespace(model=SimpleNamespace(decoder=span_decoder), task=model.task, recipe=recipe)
    with pytest.raises(NlpfwError, match=r"^decoder global_pointer\.v1 with task ner\.v1 gives no probabilities, so texts "
                                         r"cannot be scored; confidence needs a decoder and a task with a confidence method "
                                         r"\(crf\.v1 or softmax\.v1 with ner\.v1, classifier\.v1 with textcat\.v1\)$"):  # fmt: skip
        scored_predictions(fake, ["张三"])
    # Label Studio output without probabilities: the entities, no scores
    monkeypatch.setattr(type(model.model.decoder), "confidence", None)
    plain = predictions(model, ["张三在北京"], 8, scored=True)
    assert plain[0].prediction == model.predictions(["张三在北京"])[0] and plain[0].score is None
    assert {"text": "张三在北京", **plain[0].fields} == model.predict(["张三在北京"])[0]


def test_cluener_submission_refuses_other_output_formats(run_dir):
    result = CliRunner().invoke(cli, ["predict", str(run_dir), "--cluener-submission", "--output-format", "doccano"])
    assert result.exit_code == 1
    assert "Error: --submission writes its own format; leave out --output-format and --rank" in result.output


def test_unknown_output_format_names_the_formats(run_dir):
    result = CliRunner().invoke(cli, ["predict", str(run_dir), "上海", "--output-format", "brat"])
    assert result.exit_code == 1
    assert "Error: --output-format: unknown format 'brat'; formats: jsonl, doccano, label-studio" in result.output


# --- convert ---------------------------------------------------------------------------------


def test_convert_between_every_format_keeps_every_span(tmp_path):
    source = FIXTURES / "label_studio" / "export.json"
    chain = [("label-studio", "a.jsonl", "doccano"), ("doccano", "b.json", "cluener"), ("cluener", "c.jsonl", "spans"),
             ("spans", "d.json", "label-studio")]  # fmt: skip
    current = source
    for detected, name, target in chain:
        labels = ["--option", "result_type=labels"] if current == source else []  # the fixture also classifies (a choice)
        result = invoke("convert", current, tmp_path / name, "--to", target, *labels)
        assert result.exit_code == 0, result.output
        assert f"texts ({detected};" in result.output
        current = tmp_path / name
    read = LabelStudio(LabelStudioConfig(path=str(tmp_path), train="d.json", dev="d.json"), tmp_path)
    original = LabelStudio(LabelStudioConfig(path=str(source.parent), train="export.json", dev="export.json",
                                              result_type="labels"), source.parent)  # fmt: skip
    assert [(e.text, e.gold) for e in read.read_all(current, "test")] == [
        (e.text, e.gold) for e in original.read_all(source, "test")
    ]
    result = invoke("convert", source, tmp_path / "e.txt", "--to", "conll-bioes", "--option", "result_type=labels")
    assert result.exit_code == 0, result.output
    assert "Read 7 texts (label-studio; 5 labelled, 15 annotations); wrote 5" in " ".join(result.output.split())
    assert "1 span(s) overlap a longer one" in result.output and "2 text(s) without labels" in result.output
    result = invoke("convert", tmp_path / "e.txt", tmp_path / "f.jsonl", "--to", "doccano")
    assert "texts (conll-bioes; 5 labelled, 14 annotations)" in " ".join(result.output.split())
    # plain texts become tasks to label
    (tmp_path / "pool.txt").write_text("王五去了上海\n李四在北京\n", encoding="utf-8")
    result = invoke("convert", tmp_path / "pool.txt", tmp_path / "pool.json", "--to", "label-studio")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "pool.json").read_text(encoding="utf-8")) == [{"data": {"text": "王五去了上海"}},
                                                                              {"data": {"text": "李四在北京"}}]  # fmt: skip


def test_convert_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "上海", "label": [[0, 2, "LOC"]]}\n{"text": "北京", "label": [[0, 3, "LOC"]]}\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["convert", str(bad), str(tmp_path / "out.json"), "--to", "label-studio"])
    assert result.exit_code == 1
    assert (f"Error: {bad}:2: LOC span [0, 3) is out of range for a text of 2 characters (use --on-error skip to leave "
            "such records out)") in " ".join(result.output.split())  # fmt: skip
    result = CliRunner().invoke(cli, ["convert", str(bad), str(tmp_path / "out.json"), "--to", "label-studio", "--on-error", "skip"])
    assert result.exit_code == 0 and "Skipped 1 bad record(s) or span(s); the first:" in result.output
    assert json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))[1]["annotations"] == [{"result": []}]
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "nope.json"), str(tmp_path / "x"), "--to", "doccano"])
    assert result.exit_code == 1 and f"Error: convert: file not found: {tmp_path / 'nope.json'}" in result.output
    (tmp_path / "lines.jsonl").write_text('{"text": "上海", "spans": []}\n{"text": "北京\\n天津", "spans": []}\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "lines.jsonl"), str(tmp_path / "x.txt"), "--to", "conll"])
    assert result.exit_code == 1 and "Error: text 2 holds '\\n', which CoNLL (one character a line) cannot hold" in result.output


# --- the loop, simulated (benchmarks/active_learning.py, the short version) -------------------


def test_active_learning_rounds_label_the_least_confident_texts(data_root, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("active_learning", Path(__file__).resolve().parent.parent / "benchmarks" / "active_learning.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.main(["--seed-size", "60", "--pool", "150", "--budget", "30", "--rounds", "2", "--seeds", "3",
                        "--dev", "60", "--test", "150", "--epochs", "3", "--out", str(tmp_path)])  # fmt: skip
    assert [(r["strategy"], r["round"], r["labelled"]) for r in rows] == [
        ("uncertainty", 0, 60), ("uncertainty", 1, 90), ("uncertainty", 2, 120),
        ("random", 0, 60), ("random", 1, 90), ("random", 2, 120),
    ]  # fmt: skip
    assert all(0 <= r["f1"] <= 1 for r in rows) and rows[0]["f1"] == rows[3]["f1"]  # round 0 is shared
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8")) == rows
    seed_set, pool, _, _ = script.corpus(data_root, 60, 150, 60, 150)
    gold = {e.id: e for e in pool}
    for strategy in script.STRATEGIES:
        work = tmp_path / f"{strategy}-seed3"
        trained = json.loads((work / "train.json").read_text(encoding="utf-8"))  # the last round's labelled tasks
        assert len(trained) == 120 and [t["data"]["text"] for t in trained[:60]] == [e.text for e in seed_set]
        for task in trained[60:]:  # corrected from the gold spans, as an annotator would
            example = gold[task["data"]["id"]]
            spans = [(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in task["annotations"][0]["result"]]
            assert spans == [(s.start, s.end, s.label) for s in example.gold]
    # the uncertainty strategy took the top of the last ranking it saw: the 30 least confident texts
    ranked = json.loads((tmp_path / "uncertainty-seed3" / "pool_tasks.json").read_text(encoding="utf-8"))
    scores = [t["predictions"][0]["score"] for t in ranked]
    assert len(ranked) == 120 and scores == sorted(scores)
    last = json.loads((tmp_path / "uncertainty-seed3" / "train.json").read_text(encoding="utf-8"))[90:]
    assert [t["data"]["id"] for t in last] == [e.id for e in pool if e.id in {t["data"]["id"] for t in ranked[:30]}]
