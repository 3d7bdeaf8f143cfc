"""Exact-span scores agree with seqeval: strict mode (IOB2, IOBES) and default (conlleval) mode."""

from __future__ import annotations

import random

import pytest

from nlpfw.interfaces import Span
from nlpfw_plugins.span_metrics import score_spans, seqeval_scores
from nlpfw_plugins.tags import PREFIXES, TagError, read_spans
from nlpfw_plugins.ner import spans_from_tags


def test_counts_on_a_small_case():
    gold = [[Span(0, 2, "name"), Span(3, 5, "address")], [Span(1, 3, "name")]]
    pred = [[Span(0, 2, "name"), Span(3, 6, "address")], [Span(1, 3, "game")]]
    scores = score_spans(gold, pred, ["name", "address", "game"])
    assert (scores.overall.tp, scores.overall.fp, scores.overall.fn) == (1, 2, 2)
    assert scores.overall.precision == pytest.approx(1 / 3)
    assert scores.overall.recall == pytest.approx(1 / 3)
    assert scores.by_type["name"].f1 == pytest.approx(2 / 3)
    assert scores.by_type["address"].f1 == 0.0
    assert scores.by_type["game"].support == 0


def _agree(gold_tags, pred_tags, mode="strict", scheme="BIO"):
    ours = score_spans(
        [read_spans(t, mode, scheme) for t in gold_tags], [read_spans(t, mode, scheme) for t in pred_tags]
    )
    theirs = seqeval_scores(gold_tags, pred_tags, mode, scheme)
    assert ours.overall.tp > 0
    assert ours.overall.precision == pytest.approx(theirs["overall"]["precision"])
    assert ours.overall.recall == pytest.approx(theirs["overall"]["recall"])
    assert ours.overall.f1 == pytest.approx(theirs["overall"]["f1"])
    for label, counts in ours.by_type.items():
        if counts.support:
            assert counts.f1 == pytest.approx(theirs[label]["f1"]), label
            assert counts.support == theirs[label]["support"]


def test_agrees_with_seqeval_strict_on_ill_formed_sequences():
    gold = [["B-a", "I-a", "O", "B-b"], ["B-a", "I-a", "I-a"], ["O", "B-b", "I-b"]]
    pred = [["I-a", "I-a", "O", "B-b"], ["B-a", "I-b", "I-a"], ["O", "B-b", "B-b"]]
    _agree(gold, pred)
    # seqeval's default (lenient) mode would accept the stray I-a as an entity; strict does not
    from seqeval.metrics import f1_score

    assert f1_score([["B-a", "I-a"]], [["I-a", "I-a"]]) == 1.0
    assert score_spans([spans_from_tags(["B-a", "I-a"])], [spans_from_tags(["I-a", "I-a"])]).overall.f1 == 0.0


@pytest.mark.parametrize("mode", ["strict", "conlleval"])
@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_agrees_with_seqeval_on_random_sequences(mode, scheme):
    rng = random.Random(7)
    tags = ["O"] + [f"{p}-{t}" for p in PREFIXES[scheme] for t in "abc"]

    def sequence():
        return [rng.choice(tags) for _ in range(rng.randint(1, 12))]

    gold = [sequence() for _ in range(400)]
    pred = [[rng.choice(tags) if rng.random() < 0.3 else t for t in g] for g in gold]
    _agree(gold, pred, mode, scheme)


def test_the_two_modes_differ_exactly_on_entities_that_start_with_i():
    tags = ["B-LOC", "I-LOC", "I-T", "I-T", "O", "I-PER", "I-PER"]  # People's Daily's 平壤1月1日 case
    assert read_spans(tags, "conlleval") == [Span(0, 2, "LOC"), Span(2, 4, "T"), Span(5, 7, "PER")]
    assert read_spans(tags, "strict") == [Span(0, 2, "LOC")]
    assert read_spans(["B-a", "I-a", "E-a", "I-a", "S-b", "E-b"], "conlleval", "BIOES") == [
        Span(0, 3, "a"), Span(3, 4, "a"), Span(4, 5, "b"), Span(5, 6, "b"),
    ]  # fmt: skip
    assert read_spans(["B-a", "I-a", "E-a", "B-b", "I-b", "S-c"], "strict", "BIOES") == [Span(0, 3, "a"), Span(5, 6, "c")]
    with pytest.raises(TagError, match=r"unknown tag 'E-a': expected 'O' or B/I-TYPE \(BIO\)"):
        read_spans(["B-a", "E-a"])
    with pytest.raises(TagError, match="unknown tag 'B'"):
        read_spans(["B"], scheme="BIOES")
