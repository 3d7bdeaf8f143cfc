"""Classification through the annotation tools: Label Studio `choices` and doccano's
text-classification export read by label_studio.v1 and doccano.v1 (the fixtures are in each
tool's exact export shape), the writers, `nlpfw convert` between them and text_labels.v1's
JSON lines, CSV and TSV, and the sentiment corpus there and back."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from nlpfw.cli import cli
from nlpfw.errors import DataError
from nlpfw.interfaces import Example
from nlpfw_plugins.doccano import Doccano, DoccanoConfig
from nlpfw_plugins.formats import ScoredClasses, doccano_records, json_lines, label_studio_tasks
from nlpfw_plugins.label_studio import LabelStudio, LabelStudioConfig
from nlpfw_plugins.text_labels import Sentiment, SentimentConfig
from nlpfw_plugins.textcat import Classes, TextcatConfig, TextcatTask

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def label_studio(name: str = "classification.json", folder: Path = FIXTURES / "label_studio", **options) -> LabelStudio:
    defaults = {"train": name} if "split" in options else {"train": name, "dev": name}
    return LabelStudio(LabelStudioConfig(path=str(folder), **{**defaults, **options}), folder)


def doccano(name: str = "classification.jsonl", folder: Path = FIXTURES / "doccano", **options) -> Doccano:
    defaults = {"train": name} if "split" in options else {"train": name, "dev": name}
    return Doccano(DoccanoConfig(path=str(folder), **{**defaults, **options}), folder)


def classes(examples: list[Example]) -> dict:
    return {e.id: e.gold for e in examples}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


# --- Label Studio ----------------------------------------------------------------------------


def test_label_studio_choices_export_reads_the_latest_annotation_of_each_task():
    dataset = label_studio()
    examples = dataset.load("train")
    assert classes(examples) == {
        201: ["正面"],  # emoji and full-width letters in the text
        202: ["负面"],  # the later of two annotators' (li@example.com, completed_by as an object)
        205: ["正面"],  # a later cancelled annotation is left out
        206: ["中性"],  # the latest, not the one marked ground truth
        207: ["中性"],  # the annotation, not the model's prediction in the export
    }  # 203 (only a cancelled annotation) and 204 (never annotated) are not in train
    assert examples[0].text == "😀这款手机ＣＰＵ很快，电池也耐用🔋" and examples[3].text == "屏幕\u3000有划痕，客服态度还行。"
    assert dataset.labels() == ["中性", "正面", "负面"]
    test = label_studio(test="classification.json").load("test")
    assert [(e.id, e.gold) for e in test if e.gold is None] == [(203, None), (204, None)]
    assert classes(label_studio(annotator="1").load("train")) == {201: ["正面"], 202: ["中性"], 206: ["中性"]}
    assert classes(label_studio(annotator="li@example.com").load("train")) == {202: ["负面"]}
    assert classes(label_studio(annotator="3").load("train")) == {}  # user 3's only annotation was cancelled
    assert classes(label_studio(annotation="ground_truth").load("train"))[206] == ["负面"]
    assert classes(label_studio(result_type="choices", from_name="sentiment").load("train")) == classes(examples)


def test_label_studio_multiple_choices_text_field_and_no_choice():
    examples = label_studio("classification_multi.json", text_field="review").load("train")
    assert classes(examples) == {
        301: ["价格", "物流"],
        302: [],  # submitted with no aspect chosen: none applies
        303: ["质量", "价格"],  # the later annotator's, named by created_username
        304: ["物流"],
    }
    assert classes(label_studio("classification_multi.json", text_field="review", annotator="wang@example.com")
                   .load("train")) == {303: ["质量", "价格"], 304: ["物流"]}  # fmt: skip
    with pytest.raises(DataError, match=r"classification_multi\.json:task 1 \(id 301\): no string data\.text \(string "
                                        r"fields: review\); set dataset\.text_field"):  # fmt: skip
        label_studio("classification_multi.json").load("train")


def test_an_export_with_entities_and_classes_says_which_to_read():
    ner_and_topic = dict(name="export.json")  # the NER fixture's project also has a `topic` Choices control
    with pytest.raises(DataError, match=r"export\.json: holds both entity regions \(labels results of control 'label' "
                                        r"\(19\)\) and classes \(choices results of control 'topic' \(1\)\); say which to read: "
                                        r"result_type = \"labels\" or \"choices\", or from_name = the control's name "
                                        r"\(dataset\.result_type / dataset\.from_name in a recipe; --option "
                                        r"result_type=\.\.\. in nlpfw convert\)"):  # fmt: skip
        label_studio(**ner_and_topic).load("train")
    topics = classes(label_studio(**ner_and_topic, from_name="topic").load("train"))
    assert topics == {101: [], 102: ["游戏"], 103: [], 104: [], 107: []}  # annotations with no topic chosen
    assert classes(label_studio(**ner_and_topic, result_type="choices").load("train")) == topics
    entities = label_studio(**ner_and_topic, from_name="label").load("train")
    assert all(isinstance(e.gold, list) and all(hasattr(s, "start") for s in e.gold) for e in entities)


def test_bad_choices_and_several_choice_controls(tmp_path):
    def write(*results):
        task = {"id": 9, "data": {"text": "好评"}, "annotations": [{"id": 5, "result": list(results)}]}
        good = {"id": 8, "data": {"text": "差评"}, "annotations": [{"id": 4, "result": [
            {"id": "g", "type": "choices", "from_name": "sentiment", "to_name": "text", "value": {"choices": ["neg"]}}]}]}  # fmt: skip
        (tmp_path / "export.json").write_text(json.dumps([good, task], ensure_ascii=False), encoding="utf-8")

    write({"id": "x", "type": "choices", "from_name": "sentiment", "to_name": "text", "value": {"choices": "pos"}})
    with pytest.raises(DataError, match=r"export\.json:task 2 \(id 9\) annotation 5 result x: value\.choices must be a "
                                        r"non-empty list of class names, found \"pos\" \(set dataset\.on_error"):  # fmt: skip
        label_studio("export.json", tmp_path).load("train")
    lenient = label_studio("export.json", tmp_path, on_error="skip")
    assert classes(lenient.load("train")) == {8: ["neg"], 9: []} and len(lenient.skipped) == 1
    write({"id": "y", "type": "choices", "from_name": "topic", "to_name": "text", "value": {"choices": ["电子"]}})
    with pytest.raises(DataError, match=r"export\.json: holds the choices of several controls \('sentiment' \(1\), "
                                        r"'topic' \(1\)\); say which to read with from_name"):  # fmt: skip
        label_studio("export.json", tmp_path).load("train")
    assert classes(label_studio("export.json", tmp_path, from_name="topic").load("train")) == {8: [], 9: ["电子"]}
    with pytest.raises(DataError, match=r"export\.json: no result of control 'topics' \(from_name\); its controls: sentiment, topic"):
        label_studio("export.json", tmp_path, from_name="topics").load("train")


def test_classes_option_and_split(tmp_path):
    with pytest.raises(DataError, match=r"classification\.json:id 201: unknown class '正面'; classes: 负面, 中性"):
        label_studio(classes=["负面", "中性"]).load("train")
    lenient = label_studio(classes=["负面", "中性"], on_error="skip")
    assert classes(lenient.load("train")) == {202: ["负面"], 206: ["中性"], 207: ["中性"]} and len(lenient.skipped) == 2
    assert lenient.labels() == ["负面", "中性"]  # the recipe's order
    with pytest.raises(ValueError, match="give entity_types \\(entities\\) or classes \\(classification\\), not both"):
        LabelStudioConfig(path=".", entity_types=["a"], classes=["b"])
    lines = [{"id": i, "text": f"第{i}条评论", "label": ["pos" if i % 3 else "neg"]} for i in range(120)]
    (tmp_path / "all.jsonl").write_text(json_lines(lines), encoding="utf-8")
    first = doccano("all.jsonl", tmp_path, split=0.25, seed=3)
    train, dev = first.load("train"), first.load("dev")
    assert {e.id for e in train} | {e.id for e in dev} == set(range(120)) and not {e.id for e in train} & {e.id for e in dev}
    assert [e.id for e in doccano("all.jsonl", tmp_path, split=0.25, seed=3).load("dev")] == [e.id for e in dev]
    assert all(e.gold == [lines[e.id]["label"][0]] for e in train + dev)


# --- doccano ---------------------------------------------------------------------------------


def test_doccano_text_classification_exports():
    dataset = doccano()
    assert classes(dataset.load("train")) == {
        11: ["正面"], 12: ["中性"],
        13: ["负面"],  # two annotators chose the same class: read once
        15: ["中性", "负面"],  # two annotators disagree: both (textcat.v1 refuses it unless multi_label)
        16: ["正面"],
    }  # fmt: skip  # 14, "label": [], nobody labelled it: not in train
    assert dataset.labels() == ["中性", "正面", "负面"]
    assert classes(doccano(test="classification.jsonl").load("test"))[14] is None
    assert classes(doccano("classification_v1.jsonl").load("train")) == {11: ["正面"], 12: ["中性"], 16: ["正面"]}  # `labels`
    assert classes(doccano(project="text_classification").load("train")) == classes(dataset.load("train"))


BAD_LINES = [
    ('{"text": "北京", "label": [[0, 2, "LOC"]]}', r"'label' holds entity spans \[\[0, 2, 'LOC'\]\]: a sequence-labelling "
     r"export, but line 1 holds categories \(text classification\); one file is one project's export"),
    ('{"text": "北京", "label": ["pos", 3]}', r"'label' must be a list of class names \(or one name\), found \[\"pos\", 3\]"),
    ('{"text": "北京", "label": [" "]}', r"'label' must be a list of class names \(or one name\), found \[\" \"\]"),
    ('{"text": "北京"}', r"no 'label' \(a train or dev line needs one; 'label': \[\] for a text nobody labelled\)"),
    ('{"text": "北京", "label": ["pos"], "labels": ["neg"]}', "has both 'label' and 'labels'; a doccano line has one"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_a_bad_classification_line_names_the_file_and_line(tmp_path, line, message):
    (tmp_path / "export.jsonl").write_text('{"text": "上海", "label": "neg"}\n' + line + "\n", encoding="utf-8")  # one class as a string
    with pytest.raises(DataError, match=rf"export\.jsonl:2: {message}.* \(set dataset\.on_error = \"skip\""):
        doccano(folder=tmp_path, name="export.jsonl").load("train")
    dataset = doccano(folder=tmp_path, name="export.jsonl", on_error="skip")
    assert [e.gold for e in dataset.load("train")] == [["neg"]] and len(dataset.skipped) == 1


def test_doccano_project_option_decides_an_export_of_empty_labels(tmp_path):
    (tmp_path / "empty.jsonl").write_text('{"id": 1, "text": "北京", "label": []}\n', encoding="utf-8")
    assert classes(doccano("empty.jsonl", tmp_path).load("train")) == {1: []}  # auto: sequence labelling, no entities
    assert doccano("empty.jsonl", tmp_path, project="text_classification").load("train") == []  # nobody labelled it
    with pytest.raises(DataError, match=r"'label' holds categories \['pos'\]: a text-classification export, but "
                                        r"dataset\.project is \"sequence_labeling\""):  # fmt: skip
        (tmp_path / "empty.jsonl").write_text('{"id": 1, "text": "北京", "label": ["pos"]}\n', encoding="utf-8")
        doccano("empty.jsonl", tmp_path, project="sequence_labeling").load("train")


# --- writers ---------------------------------------------------------------------------------


def test_writers_give_each_tool_its_classification_shape(tmp_path):
    examples = [Example("😀好评", ["pos"], 1), Example("ＯＫ", ["neg", "pos"], "b"), Example("无人标注", None)]
    tasks = label_studio_tasks(examples)
    assert tasks[0] == {"data": {"text": "😀好评", "id": 1}, "annotations": [{"result": [
        {"id": "t0a0", "from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["pos"]}}]}]}  # fmt: skip
    assert tasks[1]["annotations"][0]["result"][0]["value"] == {"choices": ["neg", "pos"]} and tasks[2] == {"data": {"text": "无人标注"}}
    assert doccano_records(examples) == [{"id": 1, "text": "😀好评", "label": ["pos"]}, {"id": "b", "text": "ＯＫ", "label": ["neg", "pos"]},
                                         {"text": "无人标注"}]  # fmt: skip
    predicted = [ScoredClasses(["pos"], 0.91, {"neg": 0.09, "pos": 0.91}), ScoredClasses(["neg", "pos"], 0.55, {"neg": 0.7, "pos": 0.55}),
                 ScoredClasses([], 1.0, {"neg": 0.0, "pos": 0.0})]  # fmt: skip
    pre = label_studio_tasks(examples, predicted, "r2")
    assert pre[0]["predictions"] == [{"model_version": "r2", "score": 0.91, "result": [
        {"id": "t0p0", "from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["pos"]}, "score": 0.91}]}]  # fmt: skip
    assert pre[1]["predictions"][0]["result"][0]["value"] == {"choices": ["neg", "pos"]} and pre[2]["predictions"][0]["result"] == []
    assert doccano_records(examples, predicted=predicted)[1] == {"id": "b", "text": "ＯＫ", "label": ["neg", "pos"], "confidence": 0.55,
                                                                "scores": {"neg": 0.7, "pos": 0.55}}  # fmt: skip


def test_prediction_files_of_single_and_multi_label_records_import_as_the_predicted_classes(tmp_path):
    """`nlpfw predict`'s records (textcat.v1's `output` with `confidence`) through each tool's
    prediction file, accepted as they are, read back as the predicted classes."""
    records = [{"id": 1, "text": "😀好评", "label": "pos", "scores": {"neg": 0.2, "pos": 0.8}, "confidence": 0.8},
               {"id": 2, "text": "ＣＰＵ太烫", "label": "neg", "scores": {"neg": 0.6, "pos": 0.4}, "confidence": 0.6},
               {"id": 3, "text": "", "label": None, "scores": {"neg": 0.0, "pos": 0.0}, "confidence": 1.0}]  # fmt: skip
    multi = [{"text": "价格实惠👍，物流也快", "labels": ["价格", "物流"], "scores": {"价格": 0.9, "物流": 0.7}, "confidence": 0.7},
             {"text": "就是一部手机。", "labels": [], "scores": {"价格": 0.1, "物流": 0.3}, "confidence": 0.7}]  # fmt: skip
    for batch, expected in ((records, [["pos"], ["neg"], []]), (multi, [["价格", "物流"], []])):
        tasks = json.loads(LabelStudio.prediction_file(batch, "r3"))
        for task in tasks:
            task["annotations"] = [{"id": 1, "result": task["predictions"][0]["result"]}]
        (tmp_path / "ls.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
        assert [e.gold for e in label_studio("ls.json", tmp_path).read_all(tmp_path / "ls.json", "test")] == expected
        assert [t["predictions"][0]["score"] for t in tasks] == [r["confidence"] for r in batch]
        (tmp_path / "d.jsonl").write_text(Doccano.prediction_file(batch, "r3"), encoding="utf-8")
        back = doccano("d.jsonl", tmp_path, test="d.jsonl").load("test")
        assert [e.gold for e in back] == [x or None for x in expected]  # doccano's "label": [] is unlabelled


def test_textcat_confidence_is_the_top_class_or_the_least_certain_decision():
    single = TextcatTask(TextcatConfig(), ["neg", "pos"])
    fields, score = single.confidence("还行", Classes(["pos"], {"neg": 0.3, "pos": 0.7}), [], "class")
    assert fields == {"label": "pos", "scores": {"neg": 0.3, "pos": 0.7}} and score == 0.7
    multi = TextcatTask(TextcatConfig(multi_label=True), ["价格", "物流", "质量"])
    fields, score = multi.confidence("价格实惠", Classes(["价格"], {"价格": 0.95, "物流": 0.45, "质量": 0.02}), [], "classes")
    assert fields["labels"] == ["价格"] and score == 0.55  # 物流 at 0.45 is the doubtful decision: max(0.45, 0.55)
    assert multi.confidence("", Classes([], {"价格": 0.0, "物流": 0.0, "质量": 0.0}), [], "classes")[1] == 1.0


# --- convert and the sentiment corpus ---------------------------------------------------------


@pytest.fixture(scope="module")
def sentiment(data_root):
    dataset = Sentiment(SentimentConfig(), data_root)
    return {split: dataset.load(split) for split in ("train", "dev", "test")}


def test_sentiment_corpus_round_trips_through_label_studio_and_doccano(sentiment, tmp_path):
    for split, examples in sentiment.items():
        (tmp_path / f"{split}.json").write_text(json.dumps(label_studio_tasks(examples), ensure_ascii=False), encoding="utf-8")
        (tmp_path / f"{split}.jsonl").write_text(json_lines(doccano_records(examples)), encoding="utf-8")
    for dataset in (label_studio(folder=tmp_path, train="train.json", dev="dev.json", test="test.json"),
                    doccano(folder=tmp_path, train="train.jsonl", dev="dev.jsonl", test="test.jsonl")):  # fmt: skip
        for split, examples in sentiment.items():
            back = dataset.load(split)
            assert [(e.text, e.gold) for e in back] == [(e.text, e.gold) for e in examples]
        assert dataset.labels() == ["neg", "pos"] and dataset.skipped == []
    assert len(sentiment["train"]) == 13_886 and Counter(e.gold[0] for e in sentiment["dev"]) == {"neg": 923, "pos": 797}


def test_convert_between_text_labels_label_studio_and_doccano(sentiment, data_root, tmp_path):
    source = data_root / "sentiment" / "dev.jsonl"
    chain = [(source, "text-labels", "a.json", "label-studio"), (None, "label-studio", "b.jsonl", "doccano"),
             (None, "doccano", "c.csv", "text-labels-csv"), (None, "text-labels-csv", "d.tsv", "text-labels-tsv"),
             (None, "text-labels-tsv", "e.jsonl", "text-labels")]  # fmt: skip
    current = source
    for _, detected, name, target in chain:
        result = invoke("convert", current, tmp_path / name, "--to", target)
        assert result.exit_code == 0, result.output
        assert f"Read 1,720 texts ({detected}; 1,720 labelled, 1,720 annotations); wrote 1,720" in " ".join(result.output.split())
        current = tmp_path / name
    assert (tmp_path / "e.jsonl").read_text(encoding="utf-8") == source.read_text(encoding="utf-8")  # byte for byte
    assert (tmp_path / "c.csv").read_text(encoding="utf-8").splitlines()[0] == "text,label"
    assert json.loads((tmp_path / "b.jsonl").read_text(encoding="utf-8").splitlines()[0])["label"] == [sentiment["dev"][0].gold[0]]


def test_convert_multi_label_options_and_errors(tmp_path):
    fixture = FIXTURES / "label_studio" / "classification_multi.json"
    result = invoke("convert", fixture, tmp_path / "m.csv", "--to", "text-labels-csv", "--text-field", "review")
    assert result.exit_code == 0, result.output
    assert "Read 4 texts (label-studio; 4 labelled, 5 annotations); wrote 3" in " ".join(result.output.split())
    assert "1 text(s) without a class were left out" in result.output and "joined by '|'" in result.output
    assert (tmp_path / "m.csv").read_text(encoding="utf-8").splitlines() == ["review,label", "价格实惠👍，物流也快,价格|物流",
                                                                             "做工粗糙，Ｌｏｇｏ都歪了，不值这个价,质量|价格", "送货上门，点赞🚚,物流"]  # fmt: skip
    result = invoke("convert", tmp_path / "m.csv", tmp_path / "m.jsonl", "--to", "doccano", "--option", "label_separator=|",
                    "--text-field", "review", "--from", "text-labels-csv")  # a header without `text` is not recognised  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["label"] for line in (tmp_path / "m.jsonl").read_text(encoding="utf-8").splitlines()] == [
        ["价格", "物流"], ["质量", "价格"], ["物流"]]  # fmt: skip
    # the NER fixture's topic choices, by control name
    result = invoke("convert", FIXTURES / "label_studio" / "export.json", tmp_path / "t.jsonl", "--to", "text-labels",
                    "--option", "from_name=topic")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines()[1])["label"] == "游戏"
    failed = CliRunner().invoke(cli, ["convert", str(fixture), str(tmp_path / "x.txt"), "--to", "conll", "--text-field", "review"])
    assert failed.exit_code == 1 and ("Error: text 1 holds classes ['价格', '物流']; conll holds entity spans (write "
                                      "text-labels, text-labels-csv, text-labels-tsv, label-studio or doccano)") in failed.output  # fmt: skip
    failed = CliRunner().invoke(cli, ["convert", str(fixture), str(tmp_path / "x.json"), "--to", "doccano", "--option", "project=x"])
    assert failed.exit_code == 1 and ("Error: convert: --option project: the label-studio reader and the doccano writer take no "
                                      "such option; they take: text_field, result_type, from_name, annotator") in failed.output  # fmt: skip
    failed = CliRunner().invoke(cli, ["convert", str(FIXTURES / "doccano" / "export.jsonl"), str(tmp_path / "y.csv"), "--to", "text-labels-csv"])
    assert failed.exit_code == 1 and "Error: text 1 holds entity spans; text-labels formats hold classes" in failed.output
    failed = CliRunner().invoke(cli, ["convert", str(fixture), str(tmp_path / "z.json"), "--to", "doccano", "--option", "oops"])
    assert failed.exit_code == 1 and "Error: --option: expected KEY=VALUE, not 'oops'" in failed.output


def test_evaluate_data_reads_a_whole_export_even_when_the_run_split_one(tmp_path):
    """`nlpfw evaluate --data FILE` for a classifier trained on an export cut by `split`: the file
    is read whole, through the run's dataset, not cut in two."""
    task = TextcatTask(TextcatConfig(), ["中性", "正面", "负面"])
    config = LabelStudioConfig(path="/data/project", train="export.json", split=0.2, seed=5)
    kind, options = task.file_dataset(FIXTURES / "label_studio" / "classification.json", "label_studio.v1", config)
    assert kind == "label_studio.v1" and "split" not in options
    dataset = LabelStudio(LabelStudioConfig(**options), tmp_path)
    assert [e.id for e in dataset.load("dev")] == [201, 202, 205, 206, 207]


def test_a_split_export_recipe_reloads_from_the_run_folder():
    """The run folder's recipe.toml holds every key (`dev` at its default beside `split`): it loads."""
    for config in (LabelStudioConfig, DoccanoConfig):
        resolved = config(path="/data", train="export.json", split=0.2).model_dump()
        assert config(**resolved).split == 0.2 and "dev" in resolved
        with pytest.raises(ValueError, match=r"give dev \(a file\) or split"):
            config(path="/data", train="export.json", dev="mine.json", split=0.2)
