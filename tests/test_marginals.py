"""CRF marginals (forward-backward) against a brute-force enumeration of every tag path on tiny
random CRFs, with and without masks and BIO constraints; softmax tag probabilities."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nlpfw_plugins.crf import CrfConfig, CrfDecoder, bio_constraints, tag_marginals
from nlpfw_plugins.softmax import SoftmaxConfig, SoftmaxDecoder

LABELS = ["O", "B-X", "I-X", "B-Y", "I-Y"]


def brute_force(start, transitions, end, emissions, length, allowed=None):
    """Marginals [length, tags] and log Z of one row by scoring every path of `length` tags."""
    num_tags = emissions.shape[-1]
    marginals = torch.zeros(length, num_tags, dtype=torch.float64)
    scores, paths = [], []
    for path in itertools.product(range(num_tags), repeat=length):
        if allowed is not None and not (allowed[0][path[0]] and all(allowed[1][a, b] for a, b in zip(path, path[1:]))):
            continue
        score = start[path[0]] + end[path[-1]] + sum(emissions[t, tag] for t, tag in enumerate(path))
        score = score + sum(transitions[a, b] for a, b in zip(path, path[1:]))
        scores.append(float(score))
        paths.append(path)
    log_z = torch.logsumexp(torch.tensor(scores, dtype=torch.float64), dim=0)
    for score, path in zip(scores, paths):
        probability = math.exp(score - float(log_z))
        for t, tag in enumerate(path):
            marginals[t, tag] += probability
    return marginals, float(log_z)


def random_crf(generator, num_tags, batch, chars):
    start, end = torch.randn(num_tags, generator=generator), torch.randn(num_tags, generator=generator)
    transitions = torch.randn(num_tags, num_tags, generator=generator) * 2
    emissions = torch.randn(batch, chars, num_tags, generator=generator) * 3
    lengths = torch.randint(1, chars + 1, (batch,), generator=generator)
    lengths[0] = chars
    return start, transitions, end, emissions, torch.arange(chars) < lengths.unsqueeze(1)


@pytest.mark.parametrize("num_tags", [1, 2, 3, 4])
def test_marginals_match_every_path_enumerated(num_tags):
    generator = torch.Generator().manual_seed(num_tags)
    for _ in range(6):
        start, transitions, end, emissions, mask = random_crf(generator, num_tags, batch=4, chars=5)
        marginals = tag_marginals(start, transitions, end, emissions, mask)
        assert marginals.shape == emissions.shape and marginals.dtype == torch.float32
        for row in range(4):
            length = int(mask[row].sum())
            expected, _ = brute_force(start, transitions, end, emissions[row], length)
            torch.testing.assert_close(marginals[row, :length].double(), expected, atol=1e-6, rtol=1e-5)
            assert (marginals[row, length:] == 0).all()  # outside the mask
            torch.testing.assert_close(marginals[row, :length].sum(dim=1), torch.ones(length), atol=1e-5, rtol=0)


def test_masked_rows_equal_the_same_rows_alone():
    """A short row's marginals do not depend on the padding after it, nor on the other rows."""
    generator = torch.Generator().manual_seed(7)
    start, transitions, end, emissions, mask = random_crf(generator, 5, batch=6, chars=9)
    together = tag_marginals(start, transitions, end, emissions, mask)
    for row in range(6):
        length = int(mask[row].sum())
        noise = torch.randn(1, 9, 5, generator=generator) * 50
        padded = torch.where(mask[row].view(1, -1, 1), emissions[row : row + 1], noise)
        alone = tag_marginals(start, transitions, end, emissions[row : row + 1, :length], mask[row : row + 1, :length])
        torch.testing.assert_close(together[row, :length], alone[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(tag_marginals(start, transitions, end, padded, mask[row : row + 1])[0], together[row])


def test_constrained_marginals_cover_only_the_allowed_paths():
    generator = torch.Generator().manual_seed(11)
    allowed_start, allowed_transitions = bio_constraints(LABELS)
    for _ in range(5):
        start, transitions, end, emissions, mask = random_crf(generator, len(LABELS), batch=3, chars=5)
        masked_start = start.masked_fill(~allowed_start, -math.inf)
        masked_transitions = transitions.masked_fill(~allowed_transitions, -math.inf)
        marginals = tag_marginals(masked_start, masked_transitions, end, emissions, mask)
        assert torch.isfinite(marginals).all()
        for row in range(3):
            length = int(mask[row].sum())
            expected, _ = brute_force(start, transitions, end, emissions[row], length, (allowed_start, allowed_transitions))
            torch.testing.assert_close(marginals[row, :length].double(), expected, atol=1e-6, rtol=1e-5)
        assert (marginals[:, 0, 2] == 0).all() and (marginals[:, 0, 4] == 0).all()  # no I- at the start


@pytest.mark.parametrize("constrained", [False, True])
def test_crf_decoder_marginals_and_the_decoded_path(constrained):
    torch.manual_seed(3)
    decoder = CrfDecoder(CrfConfig(constrained=constrained, dropout=0.0), input_dim=6, labels=LABELS, target="tags").eval()
    with torch.no_grad():
        for param in (decoder.crf.start_transitions, decoder.crf.end_transitions, decoder.crf.transitions):
            param.normal_()
    hidden = torch.randn(3, 4, 6)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        marginals = decoder.marginals(hidden, mask)
        paths = decoder.decode(hidden, mask)
        emissions = decoder.emissions(hidden)
    constraints = bio_constraints(LABELS) if constrained else None
    crf = decoder.crf
    for row in range(3):
        length = int(mask[row].sum())
        expected, log_z = brute_force(crf.start_transitions.detach(), crf.transitions.detach(), crf.end_transitions.detach(),
                                      emissions[row], length, constraints)  # fmt: skip
        torch.testing.assert_close(marginals[row, :length].double(), expected, atol=1e-6, rtol=1e-5)
        # the decoded path's tags have their marginals, each at least the path's own probability
        path = paths[row, :length].tolist()
        own = crf.start_transitions.detach()[path[0]] + crf.end_transitions.detach()[path[-1]]
        own = own + sum(emissions[row, t, tag] for t, tag in enumerate(path))
        own = own + sum(crf.transitions.detach()[a, b] for a, b in zip(path, path[1:]))
        chosen = marginals[row, torch.arange(length), paths[row, :length]]
        assert (chosen >= math.exp(float(own) - log_z) - 1e-6).all()


def test_softmax_marginals_are_its_probabilities():
    torch.manual_seed(5)
    decoder = SoftmaxDecoder(SoftmaxConfig(dropout=0.0), input_dim=6, labels=["O", "B-A", "I-A", "B-B", "I-B"], target="tags").eval()
    hidden = torch.randn(2, 3, 6)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        probabilities = decoder.marginals(hidden, mask)
        expected = decoder.classifier(hidden).softmax(dim=-1)
        tags = decoder.decode(hidden, mask)
    torch.testing.assert_close(probabilities[0], expected[0])
    torch.testing.assert_close(probabilities[1, 0], expected[1, 0])
    assert (probabilities[1, 1:] == 0).all()
    assert probabilities[0].argmax(dim=-1).tolist() == tags[0].tolist()


@pytest.mark.parametrize("constrained", [False, True])
def test_confidence_is_the_marginal_of_the_decoded_tag(constrained):
    torch.manual_seed(7)
    hidden = torch.randn(3, 4, 6)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    for decoder in (CrfDecoder(CrfConfig(constrained=constrained, dropout=0.0), 6, LABELS, "tags").eval(),
                    SoftmaxDecoder(SoftmaxConfig(constrained=constrained, dropout=0.0), 6, LABELS, "tags").eval()):  # fmt: skip
        with torch.no_grad():
            tags = decoder.decode(hidden, mask)
            confidence = decoder.confidence(hidden, mask, tags)
            marginals = decoder.marginals(hidden, mask)
        assert confidence.shape == (3, 4)
        for row in range(3):
            length = int(mask[row].sum())
            expected = marginals[row, torch.arange(length), tags[row, :length]]
            torch.testing.assert_close(confidence[row, :length], expected)
            assert (confidence[row, length:] == 0).all() and (expected > 0).all()
        cut = decoder.unbatch(confidence, mask.sum(1).tolist())  # per window, as predict --rank reads it
        assert [len(c) for c in cut] == [4, 2, 1]


def test_ner_task_confidence_takes_each_character_from_the_window_that_owns_it():
    import numpy as np

    from nlpfw.interfaces import Span, Window
    from nlpfw_plugins.ner import NerConfig, NerTask

    task = NerTask(NerConfig(), ["LOC", "PER"])
    text = "张三去了北京"
    # two windows of 4 over 6 characters: the first owns [0, 3), the second [3, 6)
    first = Window(0, 4, (0, 3), np.array([0.9, 0.8, 0.7, 0.1]))  # its 0.1 at character 3 is not its own
    second = Window(2, 4, (3, 6), np.array([0.2, 0.95, 0.6, 0.5]))
    prediction = [Span(0, 2, "PER"), Span(4, 6, "LOC")]
    fields, score = task.confidence(text, prediction, [first, second], "tags")
    assert fields == {"entities": [
        {"type": "PER", "text": "张三", "start": 0, "end": 2, "confidence": 0.8},
        {"type": "LOC", "text": "北京", "start": 4, "end": 6, "confidence": 0.5},
    ]}  # fmt: skip
    assert score == 0.5
    assert task.confidence("", [], [], "tags") == ({"entities": []}, 1.0)
