"""Property: any Unicode text with any valid (non-overlapping) spans survives text -> char ids ->
tags -> spans exactly, whole and cut into overlapping windows."""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlpfw.corpus import encode_split
from nlpfw.interfaces import Example, Span
from nlpfw_plugins.tags import bio_tags, read_spans
from nlpfw_plugins.bert import BertEncoder, BertEncoderConfig
from nlpfw_plugins.cluener import ENTITY_TYPES
from nlpfw_plugins.ner import NerConfig, NerTask

WINDOW, STRIDE = 24, 8

# every code point Python strings hold except lone surrogates: CJK, emoji, combining marks,
# every kind of space and line break, control characters, private use, full-width forms
TEXTS = st.text(st.characters(exclude_categories=("Cs",)), max_size=120)


@st.composite
def examples(draw, max_span: int | None = None) -> Example:
    text = draw(TEXTS)
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=12)))
    spans = []
    for start, end in zip(cuts[::2], cuts[1::2]):  # disjoint [start, end) pairs
        if max_span is not None:
            end = min(end, start + max_span)
        spans.append(Span(start, end, draw(st.sampled_from(ENTITY_TYPES))))
    return Example(text, spans)


@pytest.fixture(scope="module")
def encoder(vocab, data_root):
    config = BertEncoderConfig(vocab=str(vocab), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    return BertEncoder.from_config(config, data_root)


TASK = NerTask(NerConfig(), ENTITY_TYPES)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(example=examples())
def test_text_tags_spans_round_trip(encoder, example):
    feature = TASK.encode(example, encoder)
    assert len(feature.columns["input_ids"]) == len(example.text)  # one id per character, whatever it is
    assert feature.dropped == 0
    assert TASK.spans(example.text, feature.columns["tags"].tolist()) == example.gold
    assert read_spans(bio_tags(len(example.text), example.gold)) == example.gold
    for span in example.gold:
        assert span.text_in(example.text) == example.text[span.start : span.end]


@SETTINGS
@given(example=examples(max_span=STRIDE // 2))
def test_windowed_round_trip_loses_and_duplicates_nothing(encoder, example):
    split = encode_split([example], partial(TASK.encode, encoder=encoder), WINDOW, STRIDE)
    outputs = [split[row]["tags"] for row in range(len(split))]  # the gold tags as a decoder's output
    assert split.combine(TASK, outputs, "tags") == [example.gold]
