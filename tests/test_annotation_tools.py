"""label_studio.v1 and doccano.v1: the tools' exports in their exact shapes (tests/fixtures), every
way an export can be wrong, one export split into train and dev, and CLUENER round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlpfw.convert import detect_format
from nlpfw.errors import DataError
from nlpfw.interfaces import Example, Span
from nlpfw_plugins.cluener import Cluener, CluenerConfig
from nlpfw_plugins.doccano import Doccano, DoccanoConfig
from nlpfw_plugins.formats import (
    OffsetMap,
    cluener_records,
    conll_text,
    doccano_records,
    json_lines,
    label_studio_tasks,
    spans_records,
)
from nlpfw_plugins.label_studio import LabelStudio, LabelStudioConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def label_studio(name: str = "export.json", folder: Path = FIXTURES / "label_studio", **options) -> LabelStudio:
    """The dataset over one file (train and dev both, unless `split` makes dev)."""
    if folder == FIXTURES / "label_studio" and name == "export.json":
        options.setdefault("result_type", "labels")  # its project also classifies texts (task 102's `topic` choice)
    defaults = {"train": name} if "split" in options else {"train": name, "dev": name}
    return LabelStudio(LabelStudioConfig(path=str(folder), **{**defaults, **options}), folder)


def doccano(name: str = "export.jsonl", folder: Path = FIXTURES / "doccano", **options) -> Doccano:
    defaults = {"train": name} if "split" in options else {"train": name, "dev": name}
    return Doccano(DoccanoConfig(path=str(folder), **{**defaults, **options}), folder)


def surfaces(examples: list[Example]) -> dict:
    return {e.id: [(s.label, s.start, s.end, s.text_in(e.text)) for s in e.gold] for e in examples}


T2 = "😀张伟在ＣＳＯＬ里 玩游戏🎮，住在\u3000北京市 海淀区。"
T2_SPANS = [("name", 1, 3, "张伟"), ("game", 4, 8, "ＣＳＯＬ"), ("address", 18, 25, "北京市 海淀区")]
T6_SPANS = [("book", 0, 4, "《三体》"), ("movie", 1, 3, "三体"), ("name", 5, 8, "刘慈欣"), ("name", 16, 19, "张艺谋")]


# --- Label Studio ----------------------------------------------------------------------------


def test_label_studio_export_reads_the_latest_annotation_of_each_task():
    examples = label_studio().load("train")
    assert surfaces(examples) == {
        101: [("name", 0, 2, "张三"), ("address", 3, 5, "北京"), ("company", 6, 10, "华为公司")],
        102: T2_SPANS,  # emoji, full-width letters, a space and an ideographic space; the choices result is not a span
        103: [("name", 0, 2, "李四"), ("company", 3, 7, "浙商银行"), ("position", 8, 10, "行长")],  # the latest of two; a later cancelled one is left out
        104: [("name", 0, 2, "王五"), ("address", 4, 6, "上海")],
        107: T6_SPANS,  # nested regions both kept; the relation is not a span
    }  # 105 (never annotated) and 106 (only a cancelled annotation) are not in train
    assert examples[1].text == T2
    test = label_studio(test="export.json").load("test")
    assert [(e.id, e.gold is None) for e in test] == [(101, False), (102, False), (103, False), (104, False),
                                                       (105, True), (106, True), (107, False)]  # fmt: skip
    assert surfaces(label_studio(from_name="label", result_type="auto").load("train")) == surfaces(examples)
    with pytest.raises(DataError, match=r"export\.json: holds both entity regions \(labels results of control 'label' \(19\)\) "
                                        r"and classes \(choices results of control 'topic' \(1\)\); say which to read: "
                                        r"result_type = \"labels\" or \"choices\", or from_name"):  # fmt: skip
        label_studio(result_type="auto").load("train")


def test_label_studio_annotator_and_ground_truth_options():
    by_id = surfaces(label_studio(annotator="1").load("train"))
    assert sorted(by_id) == [101, 102, 103, 104]  # user 1 did not annotate 107
    assert by_id[103] == [("name", 0, 2, "李四"), ("company", 3, 7, "浙商银行")]
    assert by_id[104] == [("name", 0, 2, "王五"), ("address", 4, 6, "上海")]
    # completed_by as an object (older exports) is matched by e-mail or id; as a number, by id
    assert sorted(surfaces(label_studio(annotator="li@example.com").load("train"))) == [103]
    assert sorted(surfaces(label_studio(annotator="2").load("train"))) == [103, 104, 107]
    assert surfaces(label_studio(annotator="3").load("train")) == {}  # user 3's only annotation was cancelled
    assert surfaces(label_studio(annotation="ground_truth").load("train"))[104] == [("name", 0, 2, "王五")]


def test_label_studio_text_field_and_utf16_offsets(tmp_path):
    text = "🎉王五去了上海"
    task = {"id": 1, "data": {"sentence": text}, "annotations": [{"id": 9, "result": [
        {"id": "a", "type": "labels", "from_name": "label", "to_name": "text",
         "value": {"start": 6, "end": 8, "text": "上海", "labels": ["LOC"]}}]}]}  # UTF-16 offsets # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps([task], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"old\.json:task 1 \(id 1\): no string data\.text \(string fields: sentence\); "
                                        r"set dataset\.text_field"):  # fmt: skip
        label_studio("old.json", tmp_path).load("train")
    with pytest.raises(DataError, match=r"old\.json:task 1 \(id 1\) annotation 9 result a: LOC span \[6, 8\) is out of range "
                                        r"for a text of 7 characters, not value\.text '上海'; the offsets match as utf16 "
                                        r"\(set dataset\.offsets = \"utf16\"\)"):  # fmt: skip
        label_studio("old.json", tmp_path, text_field="sentence").load("train")
    examples = label_studio("old.json", tmp_path, text_field="sentence", offsets="utf16").load("train")
    assert surfaces(examples) == {1: [("LOC", 5, 7, "上海")]}


BAD_TASKS = [
    ([1, 2], "expected a task object, found a list"),
    ({"id": 5, "annotations": []}, r"\(id 5\): no 'data' object \(found null\)"),
    ({"data": {"text": "北京"}, "annotations": {}}, "'annotations' must be a list, found an object"),
    ({"data": {"text": "北京"}, "annotations": [{"result": [{"type": "labels", "value": {"start": 0, "end": 2, "text": "北京"}}]}]},
     r"result 1: value\.labels must be a non-empty list of label names, found null"),
    ({"data": {"text": "北京"}, "annotations": [{"result": [{"type": "labels", "value": {"start": 0, "end": 5, "labels": ["LOC"]}}]}]},
     r"LOC span \[0, 5\) is out of range for a text of 2 characters"),
    ({"data": {"text": "北京"}, "annotations": [{"result": [{"type": "labels", "value": {"start": 1, "end": 1, "labels": ["LOC"]}}]}]},
     r"LOC span \[1, 1\) is empty or reversed"),
    ({"data": {"text": "北京"}, "annotations": [{"result": [{"type": "labels", "value": {"start": "0", "end": 2, "labels": ["LOC"]}}]}]},
     r"LOC span \[0, 2\): value\.start and value\.end must be integers"),
]  # fmt: skip


@pytest.mark.parametrize(("task", "message"), BAD_TASKS)
def test_a_bad_label_studio_task_names_the_file_and_task(tmp_path, task, message):
    good = {"data": {"text": "上海"}, "annotations": [{"result": [{"type": "labels", "value": {"start": 0, "end": 2, "text": "上海", "labels": ["LOC"]}}]}]}
    (tmp_path / "export.json").write_text(json.dumps([good, task], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=rf"export\.json:task 2\b.*{message} \(set dataset\.on_error = \"skip\""):
        label_studio(folder=tmp_path).load("train")
    dataset = label_studio(folder=tmp_path, on_error="skip")
    examples = dataset.load("train")
    assert examples[0].text == "上海" and examples[0].gold == [Span(0, 2, "LOC")]
    assert len(dataset.skipped) == 1 and "export.json:task 2" in dataset.skipped[0]


def test_a_label_studio_file_that_is_not_an_export(tmp_path):
    (tmp_path / "export.json").write_text('{"tasks": ', encoding="utf-8")
    with pytest.raises(DataError, match=r"export\.json: not valid JSON: Expecting value at line 1, column 11"):
        label_studio(folder=tmp_path).load("train")
    (tmp_path / "export.json").write_text('"text"', encoding="utf-8")
    with pytest.raises(DataError, match=r"export\.json: expected a list of tasks \(Label Studio's JSON export\), found a string"):
        label_studio(folder=tmp_path).load("train")


def test_a_wrong_value_text_is_skipped_alone(tmp_path):
    results = [{"id": "ok", "type": "labels", "value": {"start": 0, "end": 2, "text": "王五", "labels": ["PER"]}},
               {"id": "off", "type": "labels", "value": {"start": 4, "end": 6, "text": "北京", "labels": ["LOC"]}}]  # fmt: skip
    (tmp_path / "export.json").write_text(json.dumps([{"id": 3, "data": {"text": "王五去了上海"}, "annotations": [
        {"id": 4, "result": results}]}], ensure_ascii=False), encoding="utf-8")  # fmt: skip
    message = r"export\.json:task 1 \(id 3\) annotation 4 result off: LOC span \[4, 6\) is '上海' in the text, not value\.text '北京'"
    with pytest.raises(DataError, match=message):
        label_studio(folder=tmp_path).load("train")
    dataset = label_studio(folder=tmp_path, on_error="skip")
    assert surfaces(dataset.load("train")) == {3: [("PER", 0, 2, "王五")]}
    assert len(dataset.skipped) == 1


# --- doccano ---------------------------------------------------------------------------------


def test_doccano_exports_in_their_three_shapes():
    current = surfaces(doccano().load("train"))
    assert current == {
        1: [("name", 0, 2, "张三"), ("address", 3, 5, "北京"), ("company", 6, 10, "华为公司")],
        2: T2_SPANS,  # UTF-16 offsets [2, 4) [5, 9) [20, 27) in the file, after one emoji and then two
        3: T6_SPANS,
        4: [],
        5: [("address", 9, 11, "上海")],
    }
    assert surfaces(doccano("export_v1.jsonl").load("train")) == {k: current[k] for k in (1, 2, 3)}  # the older `labels` key
    assert surfaces(doccano("export_relations.jsonl").load("train")) == {k: current[k] for k in (2, 3)}  # `entities`
    # read as code points, the spans after an emoji are shifted (doccano gives no surface to check)
    shifted = surfaces(doccano(offsets="codepoints", on_error="skip").load("train"))[2]
    assert shifted[0][3] == "伟在" and shifted != T2_SPANS


BAD_LINES = [
    ('{"text": "北京", "label": [[0, 2, "LOC"]]', "not valid JSON: Expecting ',' delimiter at column 40"),
    ('["北京"]', "expected a JSON object, found a list"),
    ('{"label": []}', r"no string 'text' \(found null\)"),
    ('{"text": "北京"}', r"no 'label' \(a train or dev line needs one; 'label': \[\] for a text without entities\)"),
    ('{"text": "北京", "label": [], "labels": []}', "has both 'label' and 'labels'; a doccano line has one"),
    ('{"text": "北京", "label": {"LOC": 1}}', r"'label' must be a list of \[start, end, TYPE\], found an object"),
    ('{"text": "北京", "label": ["positive"]}', r"'label' holds categories \['positive'\]: a text-classification export"),
    ('{"text": "北京", "label": [[0, 2]]}', r"malformed span \[0, 2\]: expected \[start, end, \"TYPE\"\]"),
    ('{"text": "北京", "label": [[0, 2, ""]]}', r"malformed span \[0, 2, \"\"\]: the type must be a non-empty string"),
    ('{"text": "北京", "label": [[0, 3, "LOC"]]}', r"LOC span \[0, 3\) is out of range for a text of 2 characters"),
    ('{"text": "😀北京", "label": [[1, 4, "LOC"]]}', r"LOC span \[1, 4\) splits a character in two"),
    ('{"text": "北京", "label": [[0, 2.0, "LOC"]]}', r"LOC span \[0, 2.0\): start and end must be integers"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_a_bad_doccano_line_names_the_file_and_line(tmp_path, line, message):
    (tmp_path / "export.jsonl").write_text('{"text": "上海", "label": [[0, 2, "LOC"]]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"export\.jsonl:2: {message}.* \(set dataset\.on_error = \"skip\""):
        doccano(folder=tmp_path).load("train")
    dataset = doccano(folder=tmp_path, on_error="skip")
    assert dataset.load("train")[0].gold == [Span(0, 2, "LOC")]
    assert len(dataset.skipped) == 1 and dataset.skipped[0].startswith(f"{tmp_path / 'export.jsonl'}:2: ")


def test_entity_types_option_rejects_other_types():
    with pytest.raises(DataError, match=r"export\.jsonl:id 1: company span \[6, 10\) '华为公司': unknown entity type "
                                        r"'company'; entity types: name, address"):  # fmt: skip
        doccano(entity_types=["name", "address"]).load("train")
    dataset = doccano(entity_types=["name", "address"], on_error="skip")
    assert surfaces(dataset.load("train"))[1] == [("name", 0, 2, "张三"), ("address", 3, 5, "北京")]
    assert len(dataset.skipped) == 4  # company, game, book and movie: each span on its own


# --- one export, two splits ------------------------------------------------------------------


def test_split_makes_train_and_dev_from_one_export_reproducibly(tmp_path):
    lines = [json.dumps({"id": i, "text": f"第{i}句话在北京", "label": [[len(str(i)) + 3, len(str(i)) + 5, "LOC"]]},
                        ensure_ascii=False) for i in range(200)]  # fmt: skip
    (tmp_path / "all.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    first = doccano("all.jsonl", tmp_path, split=0.25, seed=7)
    train, dev = first.load("train"), first.load("dev")
    assert {e.id for e in train} | {e.id for e in dev} == set(range(200)) and not {e.id for e in train} & {e.id for e in dev}
    assert 30 <= len(dev) <= 70
    again = doccano("all.jsonl", tmp_path, split=0.25, seed=7)
    assert [e.id for e in again.load("dev")] == [e.id for e in dev]
    assert [e.id for e in doccano("all.jsonl", tmp_path, split=0.25, seed=8).load("dev")] != [e.id for e in dev]
    # the export grows (the next round of the loop): every text keeps its split
    more = [json.dumps({"id": i, "text": f"第{i}句话在上海", "label": []}, ensure_ascii=False) for i in range(200, 300)]
    (tmp_path / "all.jsonl").write_text("\n".join(lines + more) + "\n", encoding="utf-8")
    grown = doccano("all.jsonl", tmp_path, split=0.25, seed=7)
    assert {e.id for e in dev} <= {e.id for e in grown.load("dev")} and {e.id for e in train} <= {e.id for e in grown.load("train")}
    assert len(doccano("all.jsonl", tmp_path, split=0.25, seed=7, limit=5).load("dev")) == 5
    assert grown.files("dev") == grown.files("train")


def test_split_and_dev_together_is_a_recipe_problem(registry):
    from nlpfw.errors import RecipeError
    from nlpfw.recipe import load_recipe

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.toml"
    overrides = ["dataset.type=doccano.v1", "dataset.path=/data", "dataset.dev=held_out.jsonl", "dataset.split=0.2"]
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe, registry, overrides)
    assert "give dev (a file) or split (a share of train), not both" in str(caught.value)


def test_a_split_that_leaves_dev_empty_says_so(tmp_path):
    (tmp_path / "one.jsonl").write_text('{"text": "上海", "label": [[0, 2, "LOC"]]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"dataset\.split: a share of 0\.1 of the 1 labelled texts in .*one\.jsonl leaves "
                                        r"(dev|train) empty; label more texts or change the share"):  # fmt: skip
        doccano("one.jsonl", tmp_path, split=0.1).load("dev")


# --- writers and round trips -----------------------------------------------------------------


def test_offset_map_between_code_points_and_utf16():
    mapping = OffsetMap("a😀b𠀀c")  # an emoji and a CJK extension B character: two code units each
    assert [mapping.unit(i) for i in range(6)] == [0, 1, 3, 4, 6, 7]
    assert [mapping.index(u) for u in range(8)] == [0, 1, None, 2, 3, None, 4, 5]


def test_fixture_exports_round_trip_through_every_writer(tmp_path, registry):
    """Each tool's fixture written as the other tool's file (and CLUENER, spans) reads back the same."""
    examples = label_studio(test="export.json").load("test")
    (tmp_path / "ls.json").write_text(json.dumps(label_studio_tasks(examples), ensure_ascii=False), encoding="utf-8")
    (tmp_path / "d.jsonl").write_text(json_lines(doccano_records(examples)), encoding="utf-8")
    again = label_studio("ls.json", tmp_path).read_all(tmp_path / "ls.json", "test")
    assert [(e.id, e.text, e.gold) for e in again] == [(e.id, e.text, e.gold) for e in examples]
    back = doccano("d.jsonl", tmp_path).read_all(tmp_path / "d.jsonl", "test")
    assert [(e.id, e.text, e.gold) for e in back] == [(e.id, e.text, e.gold) for e in examples]
    assert detect_format(tmp_path / "ls.json", registry) == "label-studio" and detect_format(tmp_path / "d.jsonl", registry) == "doccano"
    # the other formats, each recognised by the dataset that declares it, plain texts by the core
    samples = {"c.jsonl": '{"text": "上海", "label": {"LOC": {"上海": [[0, 1]]}}}\n', "s.jsonl": '{"text": "上海", "spans": []}\n',
               "b.txt": "上\tB-LOC\n海\tI-LOC\n", "e.txt": "上\tB-LOC\n海\tE-LOC\n", "t.txt": "上海\n"}  # fmt: skip
    for name, content in samples.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    assert [detect_format(tmp_path / n, registry) for n in samples] == ["cluener", "spans", "conll", "conll-bioes", "text"]
    # doccano writes UTF-16 offsets, as the tool reads them
    second = json.loads((tmp_path / "d.jsonl").read_text(encoding="utf-8").splitlines()[1])
    assert second["label"] == [[2, 4, "name"], [5, 9, "game"], [20, 27, "address"]]
    assert cluener_records(examples[:1]) == [{"id": 101, "text": "张三在北京的华为公司工作。", "label": {
        "name": {"张三": [[0, 1]]}, "address": {"北京": [[3, 4]]}, "company": {"华为公司": [[6, 9]]}}}]  # fmt: skip
    assert spans_records(examples[4:5]) == [{"id": 105, "text": "这句话没有人标注。"}]
    text, dropped = conll_text(examples[-1:], "BIOES")
    assert dropped == 1  # 三体 inside 《三体》
    assert text.splitlines()[:5] == ["《\tB-book", "三\tI-book", "体\tI-book", "》\tE-book", "由\tO"]


@pytest.fixture(scope="module")
def cluener(data_root):
    return {split: Cluener(CluenerConfig(), data_root).load(split) for split in ("train", "dev")}


def test_cluener_train_and_dev_round_trip_through_label_studio_and_doccano(cluener, tmp_path):
    for split, examples in cluener.items():
        assert len(examples) in (10_748, 1_343)
        (tmp_path / f"{split}.json").write_text(json.dumps(label_studio_tasks(examples), ensure_ascii=False), encoding="utf-8")
        (tmp_path / f"{split}.jsonl").write_text(json_lines(doccano_records(examples)), encoding="utf-8")
    for dataset in (label_studio(folder=tmp_path, dev="dev.json", train="train.json"),
                    doccano(folder=tmp_path, dev="dev.jsonl", train="train.jsonl")):  # fmt: skip
        for split, examples in cluener.items():
            back = dataset.load(split)
            assert [e.text for e in back] == [e.text for e in examples]
            assert [e.gold for e in back] == [e.gold for e in examples]  # every span, the nested pair in train too
            assert sum(len(e.gold) for e in back) == sum(len(e.gold) for e in examples) > 2_000
        assert dataset.skipped == []
