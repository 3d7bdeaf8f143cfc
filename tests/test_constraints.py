"""BIO-constrained decoding (`constrained = true`) for crf.v1 and softmax.v1."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torchcrf import CRF

from nlpfw.cli import cli
from nlpfw.model import infer, load_model
from nlpfw_plugins.cluener import Cluener, CluenerConfig
from nlpfw_plugins.crf import BioConstraints, CrfConfig, CrfDecoder, bio_constraints, viterbi
from nlpfw_plugins.ner import NerConfig, NerTask
from nlpfw_plugins.softmax import SoftmaxConfig, SoftmaxDecoder

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["O", "B-name", "I-name", "B-org", "I-org"]


def may_follow(previous: str, tag: str) -> bool:
    """I-X only after B-X or I-X."""
    return not tag.startswith("I-") or (previous != "O" and previous[2:] == tag[2:])


def valid(tags: list[str]) -> bool:
    """No I-X at the start or after anything but B-X / I-X."""
    return all(may_follow(a, b) for a, b in zip(["O", *tags], tags))


def test_the_masks_forbid_exactly_the_invalid_moves():
    start, transitions = bio_constraints(LABELS)
    assert start.tolist() == [True, True, False, True, False]
    for (i, a), (j, b) in itertools.product(enumerate(LABELS), repeat=2):
        assert transitions[i, j].item() == may_follow(a, b), (a, b)
    assert not transitions[LABELS.index("O"), LABELS.index("I-org")]
    assert not transitions[LABELS.index("B-name"), LABELS.index("I-org")]
    assert not transitions[LABELS.index("I-name"), LABELS.index("I-org")]
    assert transitions[LABELS.index("B-org"), LABELS.index("I-org")]
    assert transitions[LABELS.index("I-org"), LABELS.index("B-name")]


def test_a_tag_that_is_not_bio_is_named():
    with pytest.raises(ValueError, match=r"decoder.constrained: tag 'S-name' is not a BIO tag \(O, B-X or I-X\)"):
        bio_constraints(["O", "B-name", "S-name"])


def test_every_gold_tag_sequence_of_cluener_dev_is_allowed(data_root):
    dev = Cluener(CluenerConfig(), data_root).load("dev")
    task = NerTask(NerConfig(), Cluener(CluenerConfig(), data_root).labels())
    start, transitions = bio_constraints(task.tags)
    entities = 0
    for example in dev:
        kept, _ = task.flat_spans(example.gold)
        tags = task.tag_ids(len(example.text), kept).tolist()
        assert start[tags[0]] and all(transitions[a, b] for a, b in zip(tags, tags[1:])), example.text
        entities += len(kept)
    assert len(dev) == 1343 and entities > 3000


def brute_force(start, transitions, end, emissions, allowed_start, allowed, allowed_end=None) -> list[int]:
    """The best allowed path of one sequence, by trying them all (`allowed_end`: the tags a
    sequence may end on, default all)."""
    tags = range(len(start))
    best, best_score = None, -float("inf")
    for path in itertools.product(tags, repeat=len(emissions)):
        if not allowed_start[path[0]] or not all(allowed[a, b] for a, b in zip(path, path[1:])):
            continue
        if allowed_end is not None and not allowed_end[path[-1]]:
            continue
        score = start[path[0]] + end[path[-1]] + sum(emissions[t, k] for t, k in enumerate(path))
        score += sum(transitions[a, b] for a, b in zip(path, path[1:]))
        if score > best_score:
            best, best_score = list(path), score
    return best


def test_constrained_crf_decoding_is_the_best_valid_path():
    generator = torch.Generator().manual_seed(0)
    constraints = BioConstraints(LABELS)
    crf = CRF(len(LABELS), batch_first=True)
    invalid_unconstrained = 0
    for _ in range(30):
        with torch.no_grad():
            for param in (crf.start_transitions, crf.end_transitions, crf.transitions):
                param.copy_(torch.randn(param.shape, generator=generator) * 2)
        emissions = torch.randn(3, 4, len(LABELS), generator=generator) * 2
        mask = torch.arange(4) < torch.tensor([4, 2, 1]).unsqueeze(1)
        with torch.no_grad():
            free = viterbi(crf, emissions, mask)
            tags = viterbi(crf, emissions, mask, constraints)
        for row, length in enumerate([4, 2, 1]):
            expected = brute_force(
                crf.start_transitions, crf.transitions, crf.end_transitions, emissions[row, :length],
                constraints.start, constraints.transitions,
            )  # fmt: skip
            assert tags[row, :length].tolist() == expected
            assert not tags[row, length:].any()
            invalid_unconstrained += not valid([LABELS[i] for i in free[row, :length]])
    assert invalid_unconstrained > 5  # the check above had invalid paths to fix


def test_constrained_softmax_decoding_is_the_most_probable_valid_sequence():
    decoder = SoftmaxDecoder(SoftmaxConfig(constrained=True, dropout=0.0), 6, LABELS).eval()
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(20, 4, 6, generator=generator) * 3
    mask = torch.ones(20, 4, dtype=torch.bool)
    with torch.no_grad():
        tags = decoder.decode(hidden, mask)
        log_probs = decoder.logits(hidden).log_softmax(-1)
    zeros = torch.zeros(len(LABELS))
    fixed = 0
    for row in range(20):
        expected = brute_force(
            zeros, torch.zeros(len(LABELS), len(LABELS)), zeros, log_probs[row],
            decoder.constraints.start, decoder.constraints.transitions,
        )  # fmt: skip
        assert tags[row].tolist() == expected
        argmax = log_probs[row].argmax(-1).tolist()
        fixed += argmax != expected
        if valid([LABELS[i] for i in argmax]):
            assert argmax == expected  # a valid argmax is left alone
    assert fixed > 3


def test_an_invalid_real_sequence_is_repaired():
    """Emissions that favour `O I-name I-name O` (a stray I-, as an undertrained model gives)."""
    sequence = ["O", "I-name", "I-name", "O"]
    emissions = torch.full((1, 4, len(LABELS)), -4.0)
    for t, tag in enumerate(sequence):
        emissions[0, t, LABELS.index(tag)] = 2.0
    emissions[0, 1, LABELS.index("B-name")] = 1.0  # the runner-up at the stray I-
    mask = torch.ones(1, 4, dtype=torch.bool)
    for decoder in (
        CrfDecoder(CrfConfig(constrained=True), 4, LABELS),
        SoftmaxDecoder(SoftmaxConfig(constrained=True), 4, LABELS),
    ):
        if isinstance(decoder, CrfDecoder):
            torch.nn.init.zeros_(decoder.crf.transitions)
            torch.nn.init.zeros_(decoder.crf.start_transitions)
            torch.nn.init.zeros_(decoder.crf.end_transitions)
        decoder.emissions = decoder.logits = lambda hidden, e=emissions: e  # type: ignore[method-assign]
        with torch.no_grad():
            tags = decoder.decode(torch.zeros(1, 4, 4), mask)
        assert [LABELS[i] for i in tags[0]] == ["O", "B-name", "I-name", "O"], type(decoder).__name__


@pytest.mark.parametrize("decoder", ["crf.v1", "softmax.v1"])
def test_a_constrained_model_keeps_its_constraints_when_saved_and_loaded(decoder, tmp_path, data_root, registry):
    overrides = [
        "dataset.limit=160", "encoder.hidden_size=32", "encoder.num_layers=1", "encoder.num_heads=2",
        "encoder.intermediate_size=64", "trainer.batch_size=16", "trainer.max_steps=4", "trainer.epochs=1",
        f"decoder.type={decoder}", "decoder.constrained=true",
    ]  # fmt: skip
    args = ["run", str(ROOT / "recipes" / "quickstart.toml"), "-o", str(tmp_path / "run")]
    result = CliRunner().invoke(cli, args + [x for o in overrides for x in ("--set", o)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    loaded = load_model(tmp_path / "run", registry)
    labels = json.loads((tmp_path / "run" / "model" / "labels.json").read_text())["target_labels"]
    start, transitions = bio_constraints(labels)
    assert torch.equal(loaded.model.decoder.constraints.start, start)
    assert torch.equal(loaded.model.decoder.constraints.transitions, transitions)
    split = loaded.encode(Cluener(CluenerConfig(limit=160), data_root).load("dev"))
    tags, _, _ = infer(loaded.model, loaded.task, split, 64, loaded.device)
    assert all(valid([labels[i] for i in row]) for row in tags)
    loaded.model.decoder.constraints = None  # the same weights, unconstrained
    free, _, _ = infer(loaded.model, loaded.task, split, 64, loaded.device)
    assert sum(not valid([labels[i] for i in row]) for row in free) > 0  # so the check above can fail
