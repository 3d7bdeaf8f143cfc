"""peoples_daily_2014.v1: the reference's split of the source/target pair, read conlleval-style."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import pytest

from nlpfw.errors import DataError
from nlpfw.interfaces import Span
from nlpfw.report import render_text, result_tables
from nlpfw_plugins.tags import read_spans
from nlpfw_plugins.peoples_daily import ENTITY_TYPES, PeoplesDaily, PeoplesDailyConfig

FOLDER = "people_daily_2014"


@pytest.fixture(scope="module")
def corpus(data_root: Path) -> PeoplesDaily:
    return PeoplesDaily(PeoplesDailyConfig(), data_root)


def read_conll(path: Path) -> list[tuple[str, list[str]]]:
    """`char<TAB>tag` lines, a blank line after each sentence."""
    sentences, chars, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line:
            sentences.append(("".join(chars), tags))
            chars, tags = [], []
            continue
        char, tag = line.split("\t")
        chars.append(char)
        tags.append(tag)
    assert not chars  # every sentence ends with a blank line
    return sentences


def test_the_seeded_shuffle_is_the_reference_processors():
    state = random.getstate()
    try:
        random.seed(2022)
        reference = list(range(26_326))
        random.shuffle(reference)
    finally:
        random.setstate(state)
    ours = list(range(26_326))
    random.Random(2022).shuffle(ours)
    assert ours == reference


@pytest.mark.parametrize("split", ["train", "dev"])
def test_the_split_is_exactly_train_txt_and_dev_txt(corpus, data_root, split):
    examples = corpus.load(split)
    expected = read_conll(data_root / FOLDER / f"{split}.txt")
    assert [e.text for e in examples] == [text for text, _ in expected]
    targets = (data_root / FOLDER / "target_BIO_2014_corpus.txt").read_text(encoding="utf-8").splitlines()
    for example, (_, tags) in zip(examples, expected):
        assert targets[example.id - 1].replace("_", "-").split() == tags  # id: the line of the pair
        assert example.gold == read_spans(tags, mode="conlleval")


def test_counts_and_entities_are_the_readme_table(corpus):
    train, dev = corpus.load("train"), corpus.load("dev")
    assert (len(train), len(dev)) == (21_061, 5_265)
    assert Counter(s.label for e in train for s in e.gold) == {"PER": 17_811, "LOC": 18_563, "ORG": 1_370, "T": 17_056}
    assert Counter(s.label for e in dev for s in e.gold) == {"PER": 4_367, "LOC": 4_526, "ORG": 280, "T": 4_248}
    assert corpus.labels() == ["LOC", "ORG", "PER", "T"] and corpus.skipped == []
    for example in train + dev:
        assert example.gold == sorted(example.gold)
        assert all(0 <= s.start < s.end <= len(example.text) for s in example.gold)


def test_an_entity_starting_with_i_is_kept(corpus):
    # line 39: 人民网平壤1月23日电, tagged O O O B_LOC I_LOC I_T I_T I_T I_T I_T O
    example = next(e for e in corpus.load("train") + corpus.load("dev") if e.id == 39)
    assert example.text.startswith("人民网平壤1月23日电")
    assert [(s.text_in(example.text), s.label) for s in example.gold[:2]] == [("平壤", "LOC"), ("1月23日", "T")]


def write_pair(folder: Path, sources: list[str], targets: list[str]) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "source_BIO_2014_corpus.txt").write_text("".join(f"{s}\n" for s in sources), encoding="utf-8")
    (folder / "target_BIO_2014_corpus.txt").write_text("".join(f"{t}\n" for t in targets), encoding="utf-8")
    return folder


def test_the_readme_example_gives_two_spans(tmp_path, data_root):
    folder = write_pair(tmp_path / "pd", ["平 壤 1 月 1 日"], ["B_LOC I_LOC I_T I_T I_T I_T"])
    [example] = PeoplesDaily(PeoplesDailyConfig(path=str(folder)), data_root).load("train")
    assert example.text == "平壤1月1日"
    assert example.gold == [Span(0, 2, "LOC"), Span(2, 6, "T")]


def test_split_ratio_seed_limit_and_one_read(tmp_path, data_root, monkeypatch):
    lines = [" ".join(f"{i:03d}") for i in range(10)]
    folder = write_pair(tmp_path / "pd", lines, ["O O O"] * 10)
    dataset = PeoplesDaily(PeoplesDailyConfig(path=str(folder), seed=7, dev_ratio=0.3), data_root)
    reads = []
    read = dataset.read
    monkeypatch.setattr(dataset, "read", lambda *files: reads.append(files) or read(*files))
    order = list(range(10))
    random.Random(7).shuffle(order)
    assert [e.text for e in dataset.load("dev")] == [f"{i:03d}" for i in order[:3]]
    assert [e.text for e in dataset.load("train")] == [f"{i:03d}" for i in order[3:]]
    assert len(reads) == 1
    assert dataset.files("dev") == [folder / "source_BIO_2014_corpus.txt", folder / "target_BIO_2014_corpus.txt"]
    limited = PeoplesDaily(PeoplesDailyConfig(path=str(folder), seed=7, dev_ratio=0.3, limit=2), data_root)
    assert [e.text for e in limited.load("train")] == [f"{i:03d}" for i in order[3:5]]  # the split ignores limit


def test_a_line_with_more_tags_than_characters(tmp_path, data_root):
    folder = write_pair(tmp_path / "pd", ["我 们", "北 京", "上 海"], ["O O", "B_LOC I_LOC O", "B_LOC I_LOC"])
    target = folder / "target_BIO_2014_corpus.txt"
    message = rf"^{re.escape(str(target))}:2: 3 tags, but line 2 of source_BIO_2014_corpus.txt has 2 characters \(set dataset.on_error"
    with pytest.raises(DataError, match=message):
        PeoplesDaily(PeoplesDailyConfig(path=str(folder)), data_root).load("train")
    dataset = PeoplesDaily(PeoplesDailyConfig(path=str(folder), on_error="skip"), data_root)
    texts = [e.text for e in dataset.load("train") + dataset.load("dev")]
    assert sorted(texts) == ["上海", "我们"]
    assert dataset.skipped == [f"{target}:2: 3 tags, but line 2 of source_BIO_2014_corpus.txt has 2 characters"]


def test_an_unknown_tag_or_type(tmp_path, data_root):
    folder = write_pair(tmp_path / "pd", ["北 京", "上 海"], ["B_LOC X_LOC", "B_GPE I_GPE"])
    target = folder / "target_BIO_2014_corpus.txt"
    with pytest.raises(DataError, match=rf"^{re.escape(str(target))}:1: tag 2: unknown tag 'X-LOC'"):
        PeoplesDaily(PeoplesDailyConfig(path=str(folder)), data_root).load("train")
    dataset = PeoplesDaily(PeoplesDailyConfig(path=str(folder), on_error="skip"), data_root)
    assert dataset.load("train") + dataset.load("dev") == []
    assert dataset.skipped[1] == f"{target}:2: tag 1: unknown entity type 'GPE'; entity types: LOC, ORG, PER, T"


def test_a_target_shorter_than_the_source_names_both_files(tmp_path, data_root):
    folder = write_pair(tmp_path / "pd", ["我", "你", "他"], ["O", "O"])
    source, target = folder / "source_BIO_2014_corpus.txt", folder / "target_BIO_2014_corpus.txt"
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError, match=rf"^{re.escape(str(target))}:3: the file ends here, but {re.escape(str(source))} has more lines"):
            PeoplesDaily(PeoplesDailyConfig(path=str(folder), on_error=on_error), data_root).load("dev")


def test_empty_lines_are_empty_examples_in_their_place(tmp_path, data_root):
    lines = [" ".join(f"{i:02d}") for i in range(10)]
    plain = write_pair(tmp_path / "plain", lines, ["O O"] * 10)
    holed = write_pair(tmp_path / "holed", [*lines[:4], "", *lines[5:]], [*["O O"] * 4, "", *["O O"] * 5])
    split = {folder: PeoplesDaily(PeoplesDailyConfig(path=str(folder)), data_root) for folder in (plain, holed)}
    for name in ("train", "dev"):  # counted like the reference's, so 286,269 lines give 229,016 / 57,253
        expected = ["" if e.text == "04" else e.text for e in split[plain].load(name)]
        assert [e.text for e in split[holed].load(name)] == expected
    assert "" in [e.text for name in ("train", "dev") for e in split[holed].load(name)]


def test_missing_files_and_splits_are_named(tmp_path, data_root):
    with pytest.raises(DataError, match=r"dataset\.path: folder not found: .*nowhere"):
        PeoplesDaily(PeoplesDailyConfig(path=str(tmp_path / "nowhere")), data_root).load("train")
    with pytest.raises(DataError, match=r"dataset\.target: file not found: .*tags\.txt"):
        PeoplesDaily(PeoplesDailyConfig(target="tags.txt"), data_root).load("train")
    with pytest.raises(DataError, match="peoples_daily_2014 has no split 'test'; splits: train, dev"):
        PeoplesDaily(PeoplesDailyConfig(), data_root).load("test")


def test_a_relative_data_root_is_applied_once(data_root, monkeypatch):
    monkeypatch.chdir(data_root.parent)
    dataset = PeoplesDaily(PeoplesDailyConfig(limit=3), Path(data_root.name))
    assert len(dataset.load("dev")) == 3 and all(path.is_absolute() for path in dataset.files("dev"))


def test_the_reference_tables_render_with_missing_timings(corpus):
    reference = corpus.reference()
    assert reference.speed["RTX 2070 (ref)"]["train_epoch_time"] == 2 * 3600 + 1 * 60 + 50
    assert reference.per_label["bert-base-chinese+CRF (ref)"]["PER"] == pytest.approx(0.9754)
    scores = {"overall": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 3},
              "by_type": {t: {"f1": 0.5, "support": 1} for t in ENTITY_TYPES}}  # fmt: skip
    record = {"speed": {"train_step_time": 0.1, "train_epoch_time": 5.0, "valid_step_time": 0.05, "valid_epoch_time": 1.0},
              "device": "CPU", "scores": scores, "dev_loss": 1.0}  # fmt: skip
    text = render_text(result_tables(record, reference), width=160)
    assert "2h01m50s" in text and "1h03m28s" in text and "6m15s" in text and "511 ms" in text  # 0.5107 s, as report.py rounds it
    step_row = next(line for line in text.splitlines() if "train_step_time" in line)
    assert step_row.rstrip().rstrip("│").rstrip().endswith("-")  # the RTX 3090 has no step times
    assert "98.85" in text and "99.53" in text and "0.9866" in text
