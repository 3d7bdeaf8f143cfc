"""ner.v1: text -> char ids -> tags -> spans keeps every offset exact."""

from __future__ import annotations

import json

import pytest
import torch

from nlpfw.interfaces import Example, Span
from nlpfw_plugins.bert import BertEncoder, BertEncoderConfig
from nlpfw_plugins.cluener import ENTITY_TYPES, Cluener, CluenerConfig
from nlpfw_plugins.ner import NerConfig, NerTask, spans_from_tags


@pytest.fixture(scope="module")
def encoder(vocab, data_root):
    config = BertEncoderConfig(vocab=str(vocab), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    return BertEncoder.from_config(config, data_root)


@pytest.fixture(scope="module")
def task():
    return NerTask(NerConfig(), ENTITY_TYPES)


@pytest.fixture(scope="module")
def vocab_ids(vocab):
    return {token: i for i, token in enumerate(vocab.read_text(encoding="utf-8").split("\n"))}  # not splitlines(): the vocab holds \x1c-like tokens


def round_trip(task, encoder, example):
    feature = task.encode(example, encoder)
    assert len(feature.columns["input_ids"]) == len(example.text)
    _, dropped = task.flat_spans(example.gold)
    assert feature.dropped == len(dropped) and feature.annotations == len(example.gold)
    return task.spans(example.text, feature.columns["tags"]), dropped


@pytest.mark.parametrize("split", ["train", "dev"])
def test_every_cluener_gold_span_survives_the_round_trip(split, task, encoder, data_root):
    examples = Cluener(CluenerConfig(), data_root).load(split)
    assert len(examples) == {"train": 10748, "dev": 1343}[split]
    total, dropped_all = 0, []
    for example in examples:
        spans, dropped = round_trip(task, encoder, example)
        kept = sorted(set(example.gold) - set(dropped))
        assert spans == kept, example.text
        total += len(spans)
        dropped_all += [(example.text, d) for d in dropped]
    if split == "train":
        # CLUENER's one nesting: two companies inside a book title. Flat BIO keeps the book.
        text = "据了解，日前有媒体上刊发了题为《招商银行：投资永隆银行浮亏逾百亿港元》的文章，"
        assert dropped_all == [(text, Span(16, 20, "company")), (text, Span(23, 27, "company"))]
        assert total == 23969
    else:
        assert dropped_all == []
        assert total == 3072


def test_offsets_are_exact_on_mixed_text(task, encoder, vocab_ids):
    text = "我用iPhone6s 在CSOL里打了1234567890分！ＦＵＬＬ宽 ok😀表情 Café\u3000北京"
    spans = [
        Span(2, 10, "game"),  # iPhone6s
        Span(12, 16, "game"),  # CSOL
        Span(19, 29, "scene"),  # digit run
        Span(31, 35, "company"),  # full-width letters
        Span(37, 42, "name"),  # space, Latin and emoji inside
        Span(43, 47, "book"),  # accented Latin
        Span(48, 50, "address"),  # after an ideographic space
    ]
    assert [s.text_in(text) for s in spans] == ["iPhone6s", "CSOL", "1234567890", "ＦＵＬＬ", "ok😀表情", "Café", "北京"]
    example = Example(text, spans)
    predicted, dropped = round_trip(task, encoder, example)
    assert predicted == spans and dropped == []

    ids = encoder.char_ids(text).tolist()
    assert ids[12:16] == [vocab_ids[c] for c in "csol"]
    assert ids[19:29] == [vocab_ids[c] for c in "1234567890"]
    assert ids[31:35] == [vocab_ids[c] for c in "ｆｕｌｌ"]  # lower-cased, as BERT does; the vocab has them
    assert ids[10] == ids[36] == ids[47] == vocab_ids["[unused1]"]  # space and U+3000
    assert ids[46] == vocab_ids["e"]  # accent stripped, as BERT's lower-casing does
    assert encoder.char_ids("Ｑ１").tolist() == [vocab_ids["ｑ"], vocab_ids["１"]]
    assert ids[39] == vocab_ids["[UNK]"]  # emoji
    assert ids[0] == vocab_ids["我"]


def test_strict_iob2_reading_of_tags():
    tags = ["B-a", "I-a", "O", "I-a", "I-a", "B-b", "I-a", "B-a", "B-a", "I-a"]
    assert spans_from_tags(tags) == [Span(0, 2, "a"), Span(5, 6, "b"), Span(7, 8, "a"), Span(8, 10, "a")]
    assert spans_from_tags(["I-a", "I-a"]) == []
    assert spans_from_tags(["B-a"]) == [Span(0, 1, "a")]
    assert spans_from_tags([]) == []


def test_labels_and_collate(task, encoder):
    assert task.tags[:3] == ["O", "B-address", "I-address"] and len(task.tags) == 21
    features = [task.encode(Example(t, [Span(0, 2, "name")]), encoder).as_window() for t in ("张三说", "李四")]
    batch = task.collate(features)
    assert batch["input_ids"].shape == (2, 3)
    assert batch["mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["tags"].tolist() == [[13, 14, 0], [13, 14, 0]]
    unlabelled = task.collate([task.encode(Example("张三"), encoder).as_window()])
    assert "tags" not in unlabelled


def test_encoder_output_is_one_vector_per_character(encoder, task):
    features = [task.encode(Example(t), encoder).as_window() for t in ("一二三四", "五")]
    batch = task.collate(features)
    encoder.eval()
    with torch.no_grad():
        hidden = encoder(batch["input_ids"], batch["mask"])
        alone = encoder(*task.collate(features[1:]).values())
    assert hidden.shape == (2, 4, encoder.output_dim)
    # padding changes nothing for the shorter text: [CLS] 五 [SEP] is what BERT sees
    torch.testing.assert_close(hidden[1, :1], alone[0, :1], atol=1e-5, rtol=1e-5)


def test_bilstm_on_top_changes_the_output_size(vocab, data_root, task):
    config = BertEncoderConfig(
        vocab=str(vocab), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
        bilstm=True, lstm_hidden_size=8,
    )  # fmt: skip
    encoder = BertEncoder.from_config(config, data_root)
    batch = task.collate([task.encode(Example(t), encoder).as_window() for t in ("一二三", "四")])
    assert encoder(batch["input_ids"], batch["mask"]).shape == (2, 3, 16)


def test_cluener_bad_span_names_file_and_line(tmp_path, data_root):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = {"text": "张三在北京", "label": {"name": {"张三": [[0, 1]]}}}
    bad = {"text": "张三在北京", "label": {"address": {"上海": [[3, 4]]}}}
    (folder / "dev.json").write_text(json.dumps(good, ensure_ascii=False) + "\n" + json.dumps(bad, ensure_ascii=False) + "\n", encoding="utf-8")
    dataset = Cluener(CluenerConfig(path=str(folder)), data_root)
    from nlpfw.errors import DataError

    with pytest.raises(DataError, match=r"bad/dev\.json:2: address span \[3, 4\] is '北京' in the text, not '上海'"):
        dataset.load("dev")
    with pytest.raises(DataError, match=r"dataset\.path: file not found: .*bad/train\.json"):
        dataset.load("train")


def test_scoring_mode_decides_how_predicted_tags_are_read():
    strict = NerTask(NerConfig(), ["LOC", "T"])
    lenient = NerTask(NerConfig(scoring="conlleval"), ["LOC", "T"])
    ids = [strict.tags.index(t) for t in ["B-LOC", "I-LOC", "I-T", "I-T", "O", "I-LOC"]]
    assert strict.spans("平壤1月x京", ids) == [Span(0, 2, "LOC")]
    assert lenient.spans("平壤1月x京", ids) == [Span(0, 2, "LOC"), Span(2, 4, "T"), Span(5, 6, "LOC")]
