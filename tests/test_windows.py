"""Long texts: windows cover every character, and merged predictions lose and duplicate nothing."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from nlpfw.corpus import encode_split, owned_ranges, window_settings, window_starts
from nlpfw.errors import NlpfwError
from nlpfw.interfaces import Decoder, Encoder, Example, Span
from nlpfw.model import Model, predict_split
from nlpfw_plugins.ner import NerConfig, NerTask

# A toy alphabet whose characters give away their own tags: 甲 starts an X, 乙 continues it,
# 丙 starts a Y, 丁 continues it; anything else is O.
ALPHABET = {"甲": 1, "乙": 2, "丙": 3, "丁": 4}
TASK = NerTask(NerConfig(), ["X", "Y"])  # labels O, B-X, I-X, B-Y, I-Y: the ids above


class CharEncoder(Encoder):
    def __init__(self):
        super().__init__(None)
        self.output_dim = 5

    def char_ids(self, text):
        return [ALPHABET.get(c, 0) for c in text]

    def forward(self, input_ids, mask):
        return torch.nn.functional.one_hot(input_ids, 5).float()


class EdgeBlindDecoder(Decoder):
    """Reads the tags off the characters, but guesses at random within `margin` of either
    edge of its input, the way a model without context is unreliable at a window's cut."""

    def __init__(self, margin: int):
        super().__init__(None, 5, TASK.tags, "tags")
        self.margin = margin

    def loss(self, hidden, tags, mask):
        return hidden.sum() * 0

    def decode(self, hidden, mask):
        best = hidden.argmax(-1)
        rng = random.Random(0)
        for row, length in enumerate(mask.sum(1).tolist()):
            for i in [*range(min(self.margin, length)), *range(max(length - self.margin, 0), length)]:
                best[row, i] = rng.randrange(5)
        return best * mask


def long_text(length: int, seed: int) -> tuple[str, list[Span]]:
    """Random filler with entities (1-6 characters) every few characters."""
    rng = random.Random(seed)
    chars, spans = ["文"] * 10, []
    while len(chars) < length:
        chars += ["文"] * rng.randrange(1, 12)
        kind, size = rng.choice(["X", "Y"]), rng.randrange(1, 7)
        begin, inside = ("甲", "乙") if kind == "X" else ("丙", "丁")
        spans.append(Span(len(chars), len(chars) + size, kind))
        chars += [begin] + [inside] * (size - 1)
    chars += ["文"] * 10
    return "".join(chars), spans


def test_windows_cover_the_text_and_overlap_by_the_stride():
    assert window_starts(10, None, 0) == window_starts(10, 10, 3) == [0]
    assert window_starts(25, 10, 4) == [0, 6, 12, 15]  # the last window ends at the end
    starts = window_starts(3000, 100, 40)
    assert starts[0] == 0 and starts[-1] == 2900
    assert all(b - a <= 60 for a, b in zip(starts, starts[1:]))
    ranges = owned_ranges(starts, 3000, 100)
    assert ranges[0][0] == 0 and ranges[-1][1] == 3000
    assert all(hi == lo for (_, hi), (lo, _) in zip(ranges, ranges[1:]))  # a partition
    assert all(s + 20 <= lo and hi <= s + 80 for s, (lo, hi) in zip(starts[1:-1], ranges[1:-1]))


def test_window_settings_follow_the_encoder_limit():
    assert window_settings(None, None, 510) == (510, 127)
    assert window_settings(200, 50, 510) == (200, 50)
    assert window_settings(None, None, None) == (None, 0)
    with pytest.raises(NlpfwError, match="trainer.window: 600 is longer than the encoder's limit of 510 characters"):
        window_settings(600, None, 510)
    with pytest.raises(NlpfwError, match=r"trainer.stride: 510 must be smaller than the window \(510 characters\)"):
        window_settings(None, 510, 510)


def test_training_windows_carry_the_whole_text_tags():
    text, spans = long_text(3000, seed=1)
    encoder = CharEncoder()
    split = encode_split([Example(text, spans)], lambda e: TASK.encode(e, encoder), 100, 40)
    full = TASK.encode(Example(text, spans), encoder).columns["tags"]
    assert split.stats.windowed == 1 and split.stats.windows == len(window_starts(len(text), 100, 40))
    covered = np.zeros(len(text), dtype=bool)
    for row in range(len(split)):
        window = split[row]
        start = int(split.window_start[row])
        assert len(window["input_ids"]) == len(window["tags"]) <= 100
        np.testing.assert_array_equal(window["tags"], full[start : start + len(window["tags"])])
        covered[start : start + len(window["tags"])] = True
    assert covered.all()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_3000_character_text_loses_and_duplicates_no_entity(seed):
    text, spans = long_text(3000, seed)
    window, stride = 100, 40
    starts = window_starts(len(text), window, stride)
    edges = {s for s in starts[1:]} | {s + window for s in starts[:-1]}
    straddling = [s for s in spans if any(s.start < edge < s.end for edge in edges)]
    assert len(text) >= 3000 and len(straddling) >= 20  # plenty of entities cross a cut
    model = Model(CharEncoder(), EdgeBlindDecoder(margin=8))
    short = "文" * 20 + "甲乙" + "文" * 28
    split = encode_split([Example(text, spans), Example(short, [Span(20, 22, "X")])],
                         lambda e: TASK.encode(e, model.encoder), window, stride)  # fmt: skip
    predicted, _, _ = predict_split(model, TASK, split, batch_size=7, device=torch.device("cpu"))
    # The decoder guesses within 8 characters of every edge, cuts and text ends alike; the
    # text ends are filler, so away from them the merged result must be exactly the gold.
    assert inner(predicted[0], len(text)) == spans
    assert inner(predicted[1], len(short)) == [Span(20, 22, "X")]


def inner(spans: list[Span], length: int, margin: int = 8) -> list[Span]:
    return [s for s in spans if margin <= s.start < length - margin]


def test_without_windows_the_cut_edges_would_corrupt_entities():
    # The control: read every window whole and keep all its entities, and the merge is wrong.
    text, spans = long_text(3000, seed=1)
    model = Model(CharEncoder(), EdgeBlindDecoder(margin=8))
    split = encode_split([Example(text, spans)], lambda e: TASK.encode(e, model.encoder), 100, 40)
    class KeepAll(NerTask):  # combines windows by keeping every entity of each, owned or not
        def combine(self, text, windows, target):
            return sorted({Span(s.start + w.start, s.end + w.start, s.label) for w in windows
                           for s in self.window_spans(text[w.start : w.start + w.length], w.output, target)})  # fmt: skip

    predicted, _, _ = predict_split(model, KeepAll(NerConfig(), ["X", "Y"]), split, batch_size=7, device=torch.device("cpu"))
    assert inner(predicted[0], len(text)) != spans
