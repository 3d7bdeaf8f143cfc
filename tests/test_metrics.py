"""Strict exact-span scores agree with seqeval's strict IOB2 mode."""

from __future__ import annotations

import random

import pytest

from nlpfw.interfaces import Span
from nlpfw.metrics import score_spans, seqeval_scores
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


def _agree(gold_tags, pred_tags):
    ours = score_spans([spans_from_tags(t) for t in gold_tags], [spans_from_tags(t) for t in pred_tags])
    theirs = seqeval_scores(gold_tags, pred_tags)
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


def test_agrees_with_seqeval_strict_on_random_sequences():
    rng = random.Random(7)
    tags = ["O", "B-a", "I-a", "B-b", "I-b", "B-c", "I-c"]

    def sequence():
        return [rng.choice(tags) for _ in range(rng.randint(1, 12))]

    gold = [sequence() for _ in range(400)]
    pred = [[rng.choice(tags) if rng.random() < 0.3 else t for t in g] for g in gold]
    _agree(gold, pred)
