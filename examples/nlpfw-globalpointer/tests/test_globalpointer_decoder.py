"""The Efficient GlobalPointer head on its own: loss, rotary positions, masking, decoding."""

from __future__ import annotations

import math

import pytest
import torch

from nlpfw_globalpointer import GlobalPointerConfig, GlobalPointerDecoder, multilabel_categorical_crossentropy, rotary
from nlpfw_globalpointer.decoder import NEG


def direct_mcce(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """The paper's formula written out: log(1 + sum_neg e^s) + log(1 + sum_pos e^-s), per row."""
    out = []
    for truth, score in zip(y_true.tolist(), y_pred.tolist()):
        neg = sum(math.exp(s) for t, s in zip(truth, score) if t == 0)
        pos = sum(math.exp(-s) for t, s in zip(truth, score) if t == 1)
        out.append(math.log1p(neg) + math.log1p(pos))
    return torch.tensor(out)


def test_loss_is_the_multilabel_categorical_crossentropy() -> None:
    generator = torch.Generator().manual_seed(0)
    y_pred = torch.randn(6, 9, generator=generator) * 3
    y_true = (torch.rand(6, 9, generator=generator) < 0.3).float()
    y_true[0] = 0  # a row with no positive
    expected = direct_mcce(y_true, y_pred)
    assert torch.allclose(multilabel_categorical_crossentropy(y_true, y_pred), expected, atol=1e-5)


def test_loss_ignores_impossible_spans() -> None:
    scores = torch.tensor([[2.0, -1.0, -NEG, -NEG]])
    truth = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    expected = math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))
    assert multilabel_categorical_crossentropy(truth, scores).item() == pytest.approx(expected, rel=1e-6)


def test_rotary_scores_depend_on_the_distance_only() -> None:
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(8, generator=generator).expand(1, 12, 8)  # the same vector at every position
    k = torch.randn(8, generator=generator).expand(1, 12, 8)
    rq, rk = rotary(q)[0], rotary(k)[0]
    dots = rq @ rk.T  # dots[i, j] = rot_i(q) . rot_j(k)
    for shift in (1, 3, 5):
        assert torch.allclose(dots[:-shift, :-shift], dots[shift:, shift:], atol=1e-5)
    assert torch.allclose(rq.norm(dim=-1), q[0].norm(dim=-1), atol=1e-5)  # a rotation keeps lengths
    assert torch.equal(rotary(q)[0, 0], q[0, 0])  # position 0 is not turned


def make_decoder(types: int = 3, **options) -> GlobalPointerDecoder:
    torch.manual_seed(0)
    return GlobalPointerDecoder(GlobalPointerConfig(head_size=8, dropout=0.0, **options), 16, [f"type{i}" for i in range(types)]).eval()


def test_scores_mask_padding_and_spans_ending_before_they_start() -> None:
    decoder = make_decoder()
    hidden = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    scores = decoder.scores(hidden, mask)
    assert scores.shape == (2, 3, 5, 5) and scores.dtype == torch.float32
    valid = scores > -NEG
    for row, length in enumerate((5, 3)):
        for start in range(5):
            for end in range(5):
                assert bool(valid[row, :, start, end].all()) == (start <= end < length)
                assert bool(valid[row, :, start, end].any()) == (start <= end < length)


def test_decode_returns_the_spans_scoring_above_the_threshold() -> None:
    decoder = make_decoder(threshold=0.5)
    hidden = torch.randn(2, 6, 16)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    scores = decoder.scores(hidden, mask)
    found = decoder.decode(hidden, mask)
    expected = {(b, s, e + 1, t) for b, t, s, e in (scores > 0.5).nonzero().tolist()}
    assert {tuple(r) for r in found.tolist()} == expected and len(expected) > 0
    assert all(start < end <= (6 if row == 0 else 4) for row, start, end, _ in found.tolist())


def test_gold_spans_become_the_loss_target() -> None:
    decoder = make_decoder()
    like = torch.zeros(2, 3, 5, 5)
    spans = torch.tensor([[0, 1, 3, 2], [1, 0, 5, 0], [1, 0, 2, 0]])  # (row, start, end, type)
    target = decoder.gold(spans, like)
    assert target.sum() == 3
    assert target[0, 2, 1, 2] == target[1, 0, 0, 4] == target[1, 0, 0, 1] == 1
    assert decoder.gold(torch.zeros(0, 4, dtype=torch.long), like).sum() == 0


def test_training_steps_lower_the_loss_and_find_the_gold_spans() -> None:
    decoder = make_decoder(types=2).train()
    hidden = torch.randn(3, 7, 16)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[2, 5:] = False
    spans = torch.tensor([[0, 0, 2, 0], [0, 1, 4, 1], [1, 3, 7, 0], [2, 2, 3, 1], [2, 0, 5, 0]])  # nested in row 0 and 2
    optimizer = torch.optim.Adam(decoder.parameters(), lr=0.05)
    first = decoder.loss(hidden, spans, mask).item()
    for _ in range(150):
        optimizer.zero_grad()
        decoder.loss(hidden, spans, mask).backward()
        optimizer.step()
    assert decoder.loss(hidden, spans, mask).item() < first / 10
    found = decoder.eval().decode(hidden, mask)
    assert sorted(map(tuple, found.tolist())) == sorted(map(tuple, spans.tolist()))


def test_odd_head_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of 2"):
        GlobalPointerConfig(head_size=7)
