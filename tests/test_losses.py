"""The decoders' loss options (`nlpfw_plugins.losses`): cross-entropy, focal loss, label
smoothing and class weights, the same on `softmax.v1` and `classifier.v1`."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional

from nlpfw.errors import NlpfwError, RecipeError
from nlpfw.model import build_decoder
from nlpfw.recipe import load_recipe
from nlpfw_plugins.losses import Loss, LossConfig, class_weights, focal_loss
from nlpfw_plugins.softmax import SoftmaxConfig, SoftmaxDecoder
from nlpfw_plugins.textcat import ClassifierConfig, ClassifierDecoder

TAGS = ["O", "B-name", "I-name", "B-org", "I-org"]


def batch(seed: int = 0, rows: int = 4, chars: int = 6):
    """Hidden vectors, gold tag ids and a left-aligned mask with some padding."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, chars, 8, generator=generator)
    tags = torch.randint(0, len(TAGS), (rows, chars), generator=generator)
    mask = torch.arange(chars) < torch.tensor([chars, 3, 1, 5][:rows]).unsqueeze(1)
    return hidden, tags, mask


def softmax(seed: int = 0, **options) -> SoftmaxDecoder:
    torch.manual_seed(seed)
    return SoftmaxDecoder(SoftmaxConfig(dropout=0.0, **options), 8, TAGS).eval()


def test_focal_loss_against_a_hand_computed_value():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    gold = torch.tensor([0, 2])
    expected = []
    for row, y in zip(logits.tolist(), gold.tolist()):
        p = math.exp(row[y]) / sum(math.exp(x) for x in row)
        expected.append(-((1 - p) ** 2) * math.log(p))
    assert focal_loss(logits, gold, 2.0).item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    weights = torch.tensor([1.0, 1.0, 3.0])  # the second row's class weighs 3: sum(w l) / sum(w)
    assert focal_loss(logits, gold, 2.0, weights).item() == pytest.approx((expected[0] + 3 * expected[1]) / 4, rel=1e-6)
    # an easy row (p close to 1) loses almost all of its loss; a hard one keeps most of it
    for row, ratio in (([6.0, 0.0], lambda r: r < 1e-4), ([0.0, 6.0], lambda r: r > 0.99)):
        logit = torch.tensor([row])
        assert ratio(focal_loss(logit, torch.tensor([0]), 2.0) / functional.cross_entropy(logit, torch.tensor([0]))), row


def test_focal_loss_with_gamma_0_is_cross_entropy_and_keeps_a_finite_gradient():
    generator = torch.Generator().manual_seed(3)
    logits, gold = torch.randn(50, 7, generator=generator) * 3, torch.randint(0, 7, (50,), generator=generator)
    weights = torch.rand(7, generator=generator) + 0.1
    torch.testing.assert_close(focal_loss(logits, gold, 0.0), functional.cross_entropy(logits, gold))
    torch.testing.assert_close(focal_loss(logits, gold, 0.0, weights), functional.cross_entropy(logits, gold, weight=weights))
    certain = torch.tensor([[60.0, 0.0, 0.0]], requires_grad=True)  # p rounds to 1
    focal_loss(certain, torch.tensor([0]), 0.5).backward()
    assert torch.isfinite(certain.grad).all()


def test_softmax_decoder_default_loss_is_exactly_the_old_cross_entropy():
    """Same seed, same inputs: the default loss is bit for bit the loss before loss options."""
    decoder = softmax()
    hidden, tags, mask = batch()
    old = functional.cross_entropy(decoder.logits(hidden)[mask], tags[mask])
    assert torch.equal(decoder.loss(hidden, tags, mask), old)
    explicit = softmax(loss="cross_entropy", label_smoothing=0.0)
    assert torch.equal(explicit.loss(hidden, tags, mask), old)


def test_softmax_decoder_focal_label_smoothing_and_weights_leave_padding_out():
    hidden, tags, mask = batch(seed=1)
    for options in ({}, {"loss": "focal"}, {"label_smoothing": 0.1}, {"class_weights": {"org": 3.0}}):
        decoder = softmax(**options)
        noisy_tags = torch.where(mask, tags, (tags + 1) % len(TAGS))  # other gold in the padding
        noisy_hidden = torch.where(mask.unsqueeze(2), hidden, torch.randn_like(hidden) * 100)
        assert torch.equal(decoder.loss(hidden, tags, mask), decoder.loss(noisy_hidden, noisy_tags, mask)), options


def test_softmax_decoder_focal_and_label_smoothing_values():
    hidden, tags, mask = batch(seed=2)
    logits = softmax().logits(hidden)[mask]
    gold = tags[mask]
    focal = softmax(loss="focal", focal_gamma=1.5).loss(hidden, tags, mask)
    p = logits.softmax(-1).gather(1, gold.unsqueeze(1)).squeeze(1).double()
    torch.testing.assert_close(focal.double(), (-((1 - p) ** 1.5) * p.log()).mean(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(softmax(loss="focal", focal_gamma=0.0).loss(hidden, tags, mask),
                               functional.cross_entropy(logits, gold))  # fmt: skip
    smoothed = softmax(label_smoothing=0.1).loss(hidden, tags, mask)
    assert torch.equal(smoothed, functional.cross_entropy(logits, gold, label_smoothing=0.1))  # torch's own
    log_p = logits.log_softmax(-1)  # and its definition: (1 - eps) on the gold, eps / n on every tag
    by_hand = -(0.9 * log_p.gather(1, gold.unsqueeze(1)).squeeze(1) + 0.1 / len(TAGS) * log_p.sum(1)).mean()
    torch.testing.assert_close(smoothed, by_hand)
    assert not torch.allclose(smoothed, functional.cross_entropy(logits, gold))


def test_class_weights_by_tag_and_by_entity_type():
    assert class_weights(None, TAGS) is None
    assert class_weights({"name": 2.0, "O": 0.5}, TAGS) == [0.5, 2.0, 2.0, 1.0, 1.0]
    assert class_weights({"org": 3.0, "B-org": 5.0}, TAGS) == [1.0, 1.0, 1.0, 5.0, 3.0]  # the tag wins over its type
    assert class_weights({"neg": 2.0}, ["neg", "pos"]) == [2.0, 1.0]
    with pytest.raises(ValueError, match=r"^decoder.class_weights: unknown labels \['nmae'\]; labels: O, B-name, I-name, "
                                         r"B-org, I-org \(or an entity type: name, org\)$"):  # fmt: skip
        class_weights({"nmae": 2.0}, TAGS)
    hidden, tags, mask = batch(seed=4)
    weighted = softmax(class_weights={"O": 0.2, "name": 4.0})
    logits, gold = weighted.logits(hidden)[mask], tags[mask]
    vector = torch.tensor([0.2, 4.0, 4.0, 1.0, 1.0])
    assert torch.equal(weighted.loss(hidden, tags, mask), functional.cross_entropy(logits, gold, weight=vector))
    focal = softmax(loss="focal", class_weights={"O": 0.2, "name": 4.0}).loss(hidden, tags, mask)
    torch.testing.assert_close(focal, focal_loss(logits, gold, 2.0, vector))
    assert "criterion.weight" not in weighted.state_dict()  # the recipe holds the weights, not the model file


def test_classifier_default_losses_are_exactly_the_old_ones():
    torch.manual_seed(0)
    hidden, mask = torch.randn(5, 4, 8), torch.ones(5, 4, dtype=torch.bool)
    single = ClassifierDecoder(ClassifierConfig(dropout=0.0), 8, ["a", "b", "c"], "class").eval()
    gold = torch.tensor([0, 2, 1, 1, 0])
    logits = single.logits(hidden, mask)
    assert torch.equal(single.loss(hidden, gold, mask), functional.cross_entropy(logits, gold, weight=torch.ones(3)))
    multi = ClassifierDecoder(ClassifierConfig(dropout=0.0), 8, ["a", "b", "c"], "classes").eval()
    rows = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 1], [1, 1, 1]], dtype=torch.float32)
    logits = multi.logits(hidden, mask)
    old = (functional.binary_cross_entropy_with_logits(logits, rows, reduction="none") * torch.ones(3)).mean()
    assert torch.equal(multi.loss(hidden, rows, mask), old)


def test_classifier_takes_the_same_options_as_the_tag_decoder():
    torch.manual_seed(0)
    hidden, mask = torch.randn(5, 4, 8), torch.ones(5, 4, dtype=torch.bool)
    gold = torch.tensor([0, 2, 1, 1, 0])
    plain = ClassifierDecoder(ClassifierConfig(dropout=0.0), 8, ["a", "b", "c"], "class").eval()
    logits = plain.logits(hidden, mask)
    for options, expected in (
        ({"loss": "focal"}, focal_loss(logits, gold, 2.0)),
        ({"loss": "focal", "focal_gamma": 0.0}, functional.cross_entropy(logits, gold)),
        ({"label_smoothing": 0.2}, functional.cross_entropy(logits, gold, label_smoothing=0.2)),
        ({"class_weights": {"c": 2.0}}, functional.cross_entropy(logits, gold, weight=torch.tensor([1.0, 1.0, 2.0]))),
    ):
        decoder = ClassifierDecoder(ClassifierConfig(dropout=0.0, **options), 8, ["a", "b", "c"], "class").eval()
        decoder.load_state_dict(plain.state_dict())
        torch.testing.assert_close(decoder.loss(hidden, gold, mask), expected, msg=str(options))


def test_multi_label_focal_loss_is_torchvisions_sigmoid_focal_loss():
    torch.manual_seed(1)
    logits = torch.randn(6, 3) * 2
    gold = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 1], [1, 1, 1], [0, 1, 0]], dtype=torch.float32)

    def loss(**options):
        return Loss(LossConfig(**options), ["a", "b", "c"], multi_label=True).multi(logits, gold)

    p = logits.sigmoid()
    ce = functional.binary_cross_entropy_with_logits(logits, gold, reduction="none")
    p_t = p * gold + (1 - p) * (1 - gold)
    alpha_t = 0.25 * gold + 0.75 * (1 - gold)
    torch.testing.assert_close(loss(loss="focal", focal_alpha=0.25), (alpha_t * ce * (1 - p_t) ** 2).mean())
    torch.testing.assert_close(loss(loss="focal", focal_gamma=0.0), ce.mean())
    # Keras's binary label smoothing: the targets move towards 1/2
    torch.testing.assert_close(loss(label_smoothing=0.1), functional.binary_cross_entropy_with_logits(logits, gold * 0.9 + 0.05))
    weighted = loss(class_weights={"b": 3.0})
    torch.testing.assert_close(weighted, (ce * torch.tensor([1.0, 3.0, 1.0])).mean())


def test_focal_alpha_needs_multi_label():
    with pytest.raises(ValueError, match=r"^decoder.focal_alpha: a single alpha weighs positives against negatives, "
                                         r"which only multi-label \(sigmoid\) classification has; for a per-class alpha set class_weights$"):  # fmt: skip
        ClassifierDecoder(ClassifierConfig(loss="focal", focal_alpha=0.25), 8, ["a", "b"], "class")
    with pytest.raises(ValueError, match=r"^decoder.focal_alpha: a single alpha"):
        SoftmaxDecoder(SoftmaxConfig(loss="focal", focal_alpha=0.25), 8, TAGS)
    ClassifierDecoder(ClassifierConfig(loss="focal", focal_alpha=0.25), 8, ["a", "b"], "classes")  # fine


def test_decoder_errors_are_named_by_the_build(registry):
    section = SimpleNamespace(type="softmax.v1", config=SoftmaxConfig(class_weights={"LOC": 2.0}),
                              component=registry.get("decoder", "softmax.v1"))  # fmt: skip
    task = SimpleNamespace(targets=lambda: ("tags",), target_labels=lambda target: TAGS)
    with pytest.raises(NlpfwError, match=r"^decoder: softmax.v1: decoder.class_weights: unknown labels \['LOC'\]"):
        build_decoder(section, SimpleNamespace(output_dim=8), task)


@pytest.mark.parametrize(
    "overrides, lines",
    [
        (["decoder.type=softmax.v1", "decoder.loss=lsr"], ["decoder.loss  Input should be 'cross_entropy' or 'focal', got 'lsr'"]),
        (["decoder.type=softmax.v1", "decoder.focal_gamma=1.0"],
         ['decoder.focal_gamma  only used with loss = "focal" (loss is "cross_entropy"), got 1.0']),
        (["decoder.type=softmax.v1", "decoder.loss=focal", "decoder.label_smoothing=0.1"],
         ['decoder.label_smoothing  only with loss = "cross_entropy" (focal loss takes no label smoothing), got 0.1']),
        (["decoder.type=softmax.v1", "decoder.label_smoothing=1.0", "decoder.focal_gamma=-1"],
         ["decoder.focal_gamma  Input should be greater than or equal to 0, got -1",
          "decoder.label_smoothing  Input should be less than 1, got 1.0"]),
        (["decoder.type=softmax.v1", "decoder.class_weights={O = 0.0}"],
         ["decoder.class_weights  the weight of 'O' must be positive, not 0.0, got {'O': 0.0}"]),
        (["decoder.type=crf.v1", "decoder.loss=focal"], ["decoder.loss  unknown key"]),
    ],
)  # fmt: skip
def test_recipe_errors_name_the_key(overrides, lines, registry, tmp_path):
    from pathlib import Path

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.toml"
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe, registry, overrides)
    text = " ".join(str(caught.value).split())
    for line in lines:
        assert " ".join(line.split()) in text, text


def test_the_defaults_of_a_resolved_recipe_validate_again(registry):
    """A run's recipe.toml writes every option down, focal_gamma's default included."""
    config = SoftmaxConfig.model_validate(SoftmaxConfig().model_dump(exclude_none=True))
    assert config.loss == "cross_entropy" and config.focal_gamma == 2.0
