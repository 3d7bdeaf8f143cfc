"""conll.v1 and jsonl_spans.v1: training on your own files, and every way a file can be wrong."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from test_training import run_cli

from nlpfw.errors import DataError
from nlpfw.interfaces import Span
from nlpfw_plugins.tags import bio_tags
from nlpfw_plugins.cluener import Cluener, CluenerConfig
from nlpfw_plugins.conll import Conll, ConllConfig
from nlpfw_plugins.jsonl_spans import JsonlSpans, JsonlSpansConfig

ROOT = Path(__file__).resolve().parent.parent


def write(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_text(text, encoding="utf-8")
    return folder


def conll(folder: Path, **options) -> Conll:
    return Conll(ConllConfig(path=str(folder), **options), folder)


def jsonl(folder: Path, **options) -> JsonlSpans:
    return JsonlSpans(JsonlSpansConfig(path=str(folder), **options), folder)


def spans_of(example) -> list[tuple[str, str]]:
    return [(s.text_in(example.text), s.label) for s in example.gold]


# --- conll.v1 ------------------------------------------------------------------------------

CHINESE_BIO = "我\tO\n在\tO\n北\tB-LOC\n京\tI-LOC\n1\tI-T\n日\tI-T\n\n张\tB_PER\n三\tI_PER\n"  # no blank line at the end


def test_conll_bio_one_character_per_line(tmp_path):
    folder = write(tmp_path / "c", train_txt=CHINESE_BIO, dev_txt="上\tB-LOC\n海\tI-LOC\n\n")
    dataset = conll(folder)
    first, last = dataset.load("train")
    assert (first.text, first.gold) == ("我在北京1日", [Span(2, 4, "LOC"), Span(4, 6, "T")])  # I-T starts an entity
    assert (last.text, spans_of(last), last.id) == ("张三", [("张三", "PER")], 8)  # the last sentence, B_PER read as B-PER
    assert dataset.labels() == ["LOC", "PER", "T"]  # sorted, from train and dev
    assert dataset.splits() == ("train", "dev") and dataset.files("dev") == [folder / "dev.txt"]


def test_conll_2003_four_columns_with_spaces_and_a_word_separator(tmp_path):
    text = (
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\ncall NN I-NP O\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n"
    )
    folder = write(tmp_path / "c", train_txt=text, dev_txt=text)
    first, second = conll(folder, separator=" ").load("train")
    assert first.text == "EU rejects German call"
    assert first.gold == [Span(0, 2, "ORG"), Span(11, 17, "MISC")] and spans_of(first) == [("EU", "ORG"), ("German", "MISC")]
    assert (second.text, spans_of(second)) == ("Peter Blackburn", [("Peter Blackburn", "PER")])


def test_conll_bioes_tab_separated(tmp_path):
    text = "New\tS-X\tB-LOC\nYork\tS-X\tE-LOC\nis\tS-X\tO\nbig\tS-X\tS-ADJ\n\nParis\tS-LOC\n\n"
    folder = write(tmp_path / "c", train_txt=text, dev_txt=text)
    first, second = conll(folder, separator=" ").load("dev")
    assert spans_of(first) == [("New York", "LOC"), ("big", "ADJ")] and spans_of(second) == [("Paris", "LOC")]
    with pytest.raises(DataError, match=rf"{folder / 'train.txt'}:2: unknown tag 'E-LOC': expected 'O' or B/I-TYPE \(BIO\)"):
        conll(folder, scheme="BIO").load("train")
    assert len(conll(folder, scheme="BIOES").load("train")) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("京", r"no tag: expected a token and its tag separated by a tab or spaces, found '京'"),
        ("\tB-LOC", r"empty token, found '\\tB-LOC'"),
        ("京\tX-LOC", r"unknown tag 'X-LOC': expected 'O' or B/I-TYPE \(BIO\)"),
        ("京\tI-", r"unknown tag 'I-': expected 'O' or B/I-TYPE \(BIO\)"),
    ],
)
def test_conll_bad_lines_name_file_and_line(tmp_path, line, message):
    folder = write(tmp_path / "c", train_txt=f"我\tO\n\n北\tB-LOC\n{line}\n\n你\tO\n", dev_txt="我\tO\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(folder / 'train.txt'))}:4: {message} \(set dataset.on_error"):
        conll(folder).load("train")
    dataset = conll(folder, on_error="skip")
    assert [e.text for e in dataset.load("train")] == ["我", "你"]  # the whole sentence is dropped
    assert len(dataset.skipped) == 1 and dataset.skipped[0].startswith(f"{folder / 'train.txt'}:4: ")


def test_conll_skip_counts_each_problem(tmp_path):
    text = "甲\tO\n\n乙\n丙\n\n丁\tB-BAD\n\n戊\tB-PER\n"
    folder = write(tmp_path / "c", train_txt=text, dev_txt="我\tO\n")
    dataset = conll(folder, on_error="skip", entity_types=["PER"])
    assert [e.text for e in dataset.load("train")] == ["甲", "戊"]
    path = folder / "train.txt"
    assert [item.split(": ")[0] for item in dataset.skipped] == [f"{path}:3", f"{path}:4", f"{path}:6"]
    assert dataset.skipped[2] == f"{path}:6: unknown entity type 'BAD'; entity types: PER"
    assert dataset.labels() == ["PER"]


def test_conll_splits_limits_and_missing_files(tmp_path):
    folder = write(tmp_path / "c", train_txt="我\tO\n\n你\tO\n\n他\tO\n", dev_txt="我\tO\n", test_txt="北\tB-GPE\n")
    assert [e.text for e in conll(folder, limit=2).load("train")] == ["我", "你"]
    with pytest.raises(DataError, match=r"conll.v1 has no split 'test' \(set dataset.test to add one\); splits: train, dev"):
        conll(folder).load("test")
    tested = conll(folder, test="test.txt")
    assert tested.splits() == ("train", "dev", "test")
    with pytest.raises(DataError, match=r"test.txt:1: unknown entity type 'GPE'; entity types: none \("):
        tested.load("test")  # without dataset.entity_types, train and dev define them (none here)
    with pytest.raises(DataError, match=r"dataset\.test: file not found: .*/c/absent\.txt"):
        conll(folder, test="absent.txt").load("test")
    with pytest.raises(DataError, match=r"dataset\.path: folder not found: .*/nowhere"):
        conll(tmp_path / "nowhere").load("train")


def test_a_relative_data_root_is_applied_once(tmp_path, monkeypatch):
    write(tmp_path / "root" / "mine", train_txt="我\tO\n", dev_txt="我\tO\n", train_jsonl=lines({"text": "我", "spans": []}))
    monkeypatch.chdir(tmp_path)
    assert len(Conll(ConllConfig(path="mine"), Path("root")).load("train")) == 1
    assert len(JsonlSpans(JsonlSpansConfig(path="mine"), Path("root")).load("train")) == 1


def test_conll_reads_peoples_daily_train_txt(data_root):
    dataset = Conll(ConllConfig(path="people_daily_2014"), data_root)
    train = dataset.load("train")
    assert len(train) == 21_061 and dataset.labels() == ["LOC", "ORG", "PER", "T"]
    assert Counter(s.label for e in train for s in e.gold) == {"PER": 17_811, "LOC": 18_563, "ORG": 1_370, "T": 17_056}
    dev = dataset.load("dev")
    assert len(dev) == 5_265
    assert Counter(s.label for e in dev for s in e.gold) == {"PER": 4_367, "LOC": 4_526, "ORG": 280, "T": 4_248}


# --- jsonl_spans.v1 ------------------------------------------------------------------------

def lines(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)


def test_jsonl_both_forms(tmp_path):
    train = lines(
        {"id": 7, "text": "浙商银行企业信贷部叶老桂",
         "label": {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[9, 11]]}}},
        "",
        {"text": "Ada Lovelace wrote", "spans": [{"start": 0, "end": 12, "label": "PER", "text": "Ada Lovelace"}]},
        {"text": "无实体", "spans": []},
    )
    dev = lines({"text": "北京", "spans": [{"start": 0, "end": 2, "label": "LOC"}]})
    folder = write(tmp_path / "j", train_jsonl=train, dev_jsonl=dev)
    dataset = jsonl(folder)
    cluener, simple, empty = dataset.load("train")
    assert (cluener.id, cluener.gold) == (7, [Span(0, 4, "company"), Span(9, 12, "name")])
    assert spans_of(cluener) == [("浙商银行", "company"), ("叶老桂", "name")]
    assert (simple.text, simple.gold, simple.id) == ("Ada Lovelace wrote", [Span(0, 12, "PER")], None)
    assert empty.gold == [] and dataset.skipped == []
    assert dataset.labels() == ["LOC", "PER", "company", "name"]


def test_jsonl_test_split_may_be_unlabelled(tmp_path):
    plain = lines({"text": "北京", "spans": []})
    folder = write(tmp_path / "j", train_jsonl=plain, dev_jsonl=plain, test_jsonl=lines({"id": "a", "text": "上海"}))
    [example] = jsonl(folder, test="test.jsonl").load("test")
    assert (example.id, example.text, example.gold) == ("a", "上海", None)
    message = r"train.jsonl:1: no 'label' or 'spans' \(a train or dev line needs one; 'spans': \[\] for none\)"
    with pytest.raises(DataError, match=message):
        jsonl(write(tmp_path / "k", train_jsonl=lines({"text": "上海"}), dev_jsonl="")).load("train")


BAD_LINES = [
    ('{"text": "北京"', r"not valid JSON: Expecting ',' delimiter at column 14"),
    ('["北京"]', r"expected a JSON object, found a list"),
    ({"txt": "北京"}, r"no 'text' key"),
    ({"text": 3, "spans": []}, r"'text' must be a string, found a number"),
    ({"text": "", "spans": []}, r"'text' is empty"),
    ({"text": "北京", "label": {"LOC": {"北京": [[0, 1]]}}, "spans": []}, r"has both 'label' \(CLUENER form\) and 'spans'; use one"),
    ({"text": "北京", "label": [["LOC", 0, 1]]}, r"'label' must be an object \{type: \{surface: \[\[start, end\], \.\.\.\]\}\}, found a list"),
    ({"text": "北京", "spans": {"LOC": [0, 2]}}, r"'spans' must be a list of .*, found an object"),
]
BAD_SPANS = [
    ({"text": "北京大学", "label": {"LOC": {"北京": [[0, 1]], "大学": [[1, 2]]}}},
     r"LOC span \[1, 2\] is '京大' in the text, not '大学'"),
    ({"text": "北京大学", "spans": [{"start": 0, "end": 2, "label": "LOC", "text": "北京"}, {"start": 2, "end": 4, "label": "ORG", "text": "大"}]},
     r"ORG span \[2, 4\) is '大学' in the text, not '大'"),
    ({"text": "北京大学", "label": {"LOC": {"北京": [[0, 1]], "学": [[4, 4]]}}},
     r"LOC span \[4, 4\] is out of range for a text of 4 characters"),
    ({"text": "北京大学", "spans": [{"start": 0, "end": 2, "label": "LOC"}, {"start": -1, "end": 2, "label": "LOC"}]},
     r"LOC span \[-1, 2\) is out of range for a text of 4 characters"),
    ({"text": "北京大学", "spans": [{"start": 0, "end": 2, "label": "LOC"}, {"start": 3, "end": 3, "label": "LOC"}]},
     r"LOC span \[3, 3\) is empty or reversed"),
    ({"text": "北京大学", "spans": [{"start": 0, "end": 4, "label": "ORG"}, {"start": 0, "end": 2, "label": "LOC"}]},
     r"LOC span \[0, 2\) '北京' overlaps ORG span \[0, 4\) '北京大学' \(flat tags hold one entity per character\)"),
    ({"text": "北京大学", "label": {"ORG": {"北京大学": [[0, 3]]}, "LOC": {"北京": [[0, 1]]}}},
     r"LOC span \[0, 1\] '北京' overlaps ORG span \[0, 3\] '北京大学'"),
    ({"text": "北京大学", "spans": [{"start": 0, "end": 4, "label": "ORG"}, {"start": 0, "end": "2", "label": "LOC"}]},
     r"malformed span record \{\"start\": 0, \"end\": \"2\", \"label\": \"LOC\"\}: expected \{\"start\": int, \"end\": int, \"label\": str\}"),
    ({"text": "北京大学", "label": {"ORG": {"北京大学": [[0, 3]]}, "LOC": {"北京": [[0, 1, 2]]}}},
     r"malformed span record: LOC '北京' position \[0, 1, 2\] is not \[start, end\]"),
    ({"text": "北京大学", "label": {"ORG": {"北京大学": [[0, 3]]}, "LOC": {"北京": "0-1"}}},
     r"malformed span record: LOC '北京' must have a list of \[start, end\], found a string"),
    ({"text": "北京大学", "label": {"ORG": {"北京大学": [[0, 3]]}, "LOC": ["北京"]}},
     r"malformed span record: label 'LOC' must map surfaces to \[\[start, end\], \.\.\.\], found a list"),
]  # fmt: skip


@pytest.mark.parametrize(("record", "message"), BAD_LINES + BAD_SPANS)
def test_jsonl_each_error_names_file_and_line(tmp_path, record, message):
    good = {"text": "上海", "spans": [{"start": 0, "end": 2, "label": "LOC"}]}
    folder = write(tmp_path / "j", train_jsonl=lines(good, "", record, good), dev_jsonl="")
    with pytest.raises(DataError, match=rf"^{re.escape(str(folder / 'train.jsonl'))}:3: {message}"):
        jsonl(folder).load("train")


@pytest.mark.parametrize(("record", "message"), BAD_LINES)
def test_jsonl_skip_drops_a_bad_line(tmp_path, record, message):
    good = {"text": "上海", "spans": [{"start": 0, "end": 2, "label": "LOC"}]}
    folder = write(tmp_path / "j", train_jsonl=lines(good, record, good), dev_jsonl="")
    dataset = jsonl(folder, on_error="skip")
    assert [e.text for e in dataset.load("train")] == ["上海", "上海"]
    [skipped] = dataset.skipped
    assert re.match(rf"{re.escape(str(folder / 'train.jsonl'))}:2: {message}", skipped)


@pytest.mark.parametrize(("record", "message"), BAD_SPANS)
def test_jsonl_skip_drops_only_the_bad_span(tmp_path, record, message):
    folder = write(tmp_path / "j", train_jsonl=lines(record), dev_jsonl="")
    dataset = jsonl(folder, on_error="skip")
    [example] = dataset.load("train")
    assert example.text == "北京大学" and len(example.gold) == 1  # each record has one good span and one bad
    assert example.gold[0].label in ("LOC", "ORG") and example.gold[0].start == 0
    [skipped] = dataset.skipped
    assert re.match(rf"{re.escape(str(folder / 'train.jsonl'))}:1: {message}", skipped)


def test_jsonl_overlaps_keep_the_longer_then_the_earlier(tmp_path):
    spans = [("LOC", 0, 2), ("ORG", 0, 4), ("PER", 3, 6), ("X", 5, 7), ("Y", 6, 8)]
    record = {"text": "北京大学的张三丰", "spans": [{"start": s, "end": e, "label": l} for l, s, e in spans]}
    folder = write(tmp_path / "j", train_jsonl=lines(record, record), dev_jsonl="")
    dataset = jsonl(folder, on_error="skip")
    first, _ = dataset.load("train")
    assert first.gold == [Span(0, 4, "ORG"), Span(5, 7, "X")]  # PER overlaps the longer ORG; Y is later than X
    assert [item.split(": ", 1)[1] for item in dataset.skipped[:3]] == [
        "PER span [3, 6) '学的张' overlaps ORG span [0, 4) '北京大学' (flat tags hold one entity per character)",
        "LOC span [0, 2) '北京' overlaps ORG span [0, 4) '北京大学' (flat tags hold one entity per character)",
        "Y span [6, 8) '三丰' overlaps X span [5, 7) '张三' (flat tags hold one entity per character)",
    ]
    assert len(dataset.skipped) == 6 and dataset.skipped[3].startswith(f"{folder / 'train.jsonl'}:2: ")


def test_jsonl_duplicate_spans_are_one(tmp_path):
    record = {"text": "北京", "label": {"LOC": {"北京": [[0, 1], [0, 1]]}}, "spans_note": "ignored"}
    [example] = jsonl(write(tmp_path / "j", train_jsonl=lines(record), dev_jsonl="")).load("train")
    assert example.gold == [Span(0, 2, "LOC")]


def test_jsonl_entity_types_set_or_from_the_data(tmp_path):
    train = lines({"text": "北京张三", "spans": [{"start": 0, "end": 2, "label": "LOC"}, {"start": 2, "end": 4, "label": "PER"}]})
    folder = write(tmp_path / "j", train_jsonl=train, dev_jsonl=lines({"text": "微软", "label": {"ORG": {"微软": [[0, 1]]}}}))
    assert jsonl(folder).labels() == ["LOC", "ORG", "PER"]
    with pytest.raises(DataError, match=r"train.jsonl:1: PER span \[2, 4\): unknown entity type 'PER'; entity types: LOC, ORG"):
        jsonl(folder, entity_types=["LOC", "ORG"]).load("train")
    dataset = jsonl(folder, entity_types=["ORG", "LOC"], on_error="skip")
    assert dataset.load("train")[0].gold == [Span(0, 2, "LOC")] and dataset.labels() == ["ORG", "LOC"]


# --- end to end ----------------------------------------------------------------------------

TINY = [
    "encoder.hidden_size=32", "encoder.num_layers=1", "encoder.num_heads=2", "encoder.intermediate_size=64",
    "trainer.batch_size=16", "trainer.eval_batch_size=64", "trainer.epochs=1", "trainer.max_steps=4",
]  # fmt: skip


def cluener_slice(data_root: Path):
    examples = Cluener(CluenerConfig(limit=240), data_root).load("dev")
    return examples[:160], examples[160:]


def train_cli(tmp_path: Path, *overrides: str) -> Path:
    output = tmp_path / "run"
    result = run_cli(ROOT / "recipes" / "quickstart.toml", output, *TINY, *overrides)
    assert result.exit_code == 0, result.output
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    assert 0 <= report["best"]["scores"]["overall"]["f1"] <= 1
    return output


def test_cli_trains_on_conll_files(tmp_path, data_root):
    folder = tmp_path / "conll"
    folder.mkdir()
    for name, examples in zip(("train.txt", "dev.txt"), cluener_slice(data_root)):
        with (folder / name).open("w", encoding="utf-8") as file:
            for e in examples:
                file.writelines(f"{c}\t{t}\n" for c, t in zip(e.text, bio_tags(len(e.text), e.gold)))
                file.write("\n")
    output = train_cli(tmp_path, "dataset.type=conll.v1", f"dataset.path={folder}")
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    assert report["data"]["train_examples"] == 160 and report["data"]["dev_examples"] == 80


def test_cli_trains_on_jsonl_files(tmp_path, data_root):
    train, dev = cluener_slice(data_root)
    simple = [{"text": e.text, "spans": [{"start": s.start, "end": s.end, "label": s.label} for s in e.gold]} for e in train]
    cluener = [{"text": e.text, "label": {}} for e in dev]
    for record, e in zip(cluener, dev):
        for s in e.gold:
            record["label"].setdefault(s.label, {}).setdefault(s.text_in(e.text), []).append([s.start, s.end - 1])
    folder = write(tmp_path / "jsonl", train_jsonl=lines(*simple), dev_jsonl=lines(*cluener))
    with (folder / "train.jsonl").open("a", encoding="utf-8") as file:
        file.write('{"text": "张三", "spans": [{"start": 0, "end": 3, "label": "name"}]}\n{"text": \n')
    output = train_cli(tmp_path, "dataset.type=jsonl_spans.v1", f"dataset.path={folder}", "dataset.on_error=skip")
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    assert report["data"]["train_examples"] == 161 and report["data"]["dev_examples"] == 80
    # the bad span and the bad line are left out, and listed in the run's report
    assert [item.split(": ")[0] for item in report["data"]["skipped"]] == [f"{folder / 'train.jsonl'}:{n}" for n in (161, 162)]
