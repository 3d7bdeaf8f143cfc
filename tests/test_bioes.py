"""`ner.v1`'s `scheme = "bioes"`: the tags, reading them back strictly, the BIOES constraints of
crf.v1 and softmax.v1, and a model trained with BIOES tags end to end (saved, loaded, ONNX)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from test_constraints import brute_force
from torchcrf import CRF

import nlpfw
from nlpfw.errors import NlpfwError
from nlpfw.export import OnnxModel, export_onnx
from nlpfw.interfaces import Example, Span
from nlpfw.model import predict_split
from nlpfw.recipe import load_recipe
from nlpfw_plugins.cluener import Cluener, CluenerConfig
from nlpfw_plugins.crf import CrfConfig, CrfDecoder, TagConstraints, tag_constraints, tag_marginals, viterbi
from nlpfw_plugins.ner import NerConfig, NerTask
from nlpfw_plugins.softmax import SoftmaxConfig, SoftmaxDecoder
from nlpfw_plugins.span_metrics import seqeval_scores
from nlpfw_plugins.tags import read_spans, write_tags

LABELS = ["O", "B-a", "I-a", "E-a", "S-a", "B-b", "I-b", "E-b", "S-b"]


def may_follow(previous: str | None, tag: str | None) -> bool:
    """IOBES: after B-X/I-X only I-X or E-X; I-X/E-X only after B-X/I-X; None is a text's edge."""
    open_kind = previous[2:] if previous and previous[0] in "BI" else None
    if tag is None or tag == "O" or tag[0] in "BS":
        return open_kind is None
    return open_kind == tag[2:]


def valid(tags: list[str]) -> bool:
    return all(may_follow(a, b) for a, b in zip([None, *tags], [*tags, None]))


def test_the_task_tags_in_its_scheme():
    assert NerConfig(scheme="bioes").scheme == NerConfig(scheme="BIOES").scheme == "BIOES"
    assert NerConfig().scheme == "BIO"
    task = NerTask(NerConfig(scheme="bioes"), ["a", "b"])
    assert task.tags == LABELS and task.target_labels("tags") == LABELS and task.target_labels("spans") == ["a", "b"]
    spans = [Span(0, 1, "a"), Span(2, 4, "b"), Span(5, 8, "a")]
    assert [task.tags[i] for i in task.tag_ids(9, spans)] == ["S-a", "O", "B-b", "E-b", "O", "B-a", "I-a", "E-a", "O"]
    assert write_tags(9, spans, "BIOES") == [task.tags[i] for i in task.tag_ids(9, spans)]
    bio = NerTask(NerConfig(), ["a", "b"])
    assert [bio.tags[i] for i in bio.tag_ids(9, spans)] == ["B-a", "O", "B-b", "I-b", "O", "B-a", "I-a", "I-a", "O"]
    with pytest.raises(ValueError, match=r"Input should be 'BIO' or 'BIOES'"):
        NerConfig(scheme="iobes")


def test_every_cluener_train_example_round_trips_through_bioes_tags(data_root):
    """Encode each text's gold as BIOES tag ids, read them back: exactly its (flat) spans."""
    dataset = Cluener(CluenerConfig(), data_root)
    train = dataset.load("train")
    strict = NerTask(NerConfig(scheme="BIOES"), dataset.labels())
    lenient = NerTask(NerConfig(scheme="BIOES", scoring="conlleval"), dataset.labels())
    single = entities = dropped = 0
    for example in train:
        kept, left_out = strict.flat_spans(example.gold)
        ids = strict.tag_ids(len(example.text), kept).tolist()
        assert strict.spans(example.text, ids) == kept, example.text
        assert lenient.spans(example.text, ids) == kept, example.text
        entities += len(kept)
        dropped += len(left_out)
        single += sum(s.end - s.start == 1 for s in kept)
    assert len(train) == 10748 and entities == 23969 and dropped == 2  # 2 nested spans no flat tags can hold
    assert single > 0  # S- tags were exercised (CLUENER has one-character entities)


@pytest.mark.parametrize(
    "tags, strict, conlleval",
    [
        (["B-a"], [], [Span(0, 1, "a")]),  # an entity never closed
        (["B-a", "I-a"], [], [Span(0, 2, "a")]),
        (["B-a", "I-a", "O"], [], [Span(0, 2, "a")]),
        (["I-a", "E-a"], [], [Span(0, 2, "a")]),  # never opened
        (["E-a"], [], [Span(0, 1, "a")]),
        (["B-a", "E-b"], [], [Span(0, 1, "a"), Span(1, 2, "b")]),  # types differ
        (["B-a", "S-a"], [Span(1, 2, "a")], [Span(0, 1, "a"), Span(1, 2, "a")]),
        (["B-a", "B-a", "E-a"], [Span(1, 3, "a")], [Span(0, 1, "a"), Span(1, 3, "a")]),
        (["B-a", "I-a", "E-a", "E-a"], [Span(0, 3, "a")], [Span(0, 3, "a"), Span(3, 4, "a")]),
        (["S-a", "I-a", "E-a"], [Span(0, 1, "a")], [Span(0, 1, "a"), Span(1, 3, "a")]),
        (["B-a", "O", "E-a"], [], [Span(0, 1, "a"), Span(2, 3, "a")]),
        (["S-a", "S-b", "B-a", "E-a"], [Span(0, 1, "a"), Span(1, 2, "b"), Span(2, 4, "a")],
         [Span(0, 1, "a"), Span(1, 2, "b"), Span(2, 4, "a")]),
    ],
)  # fmt: skip
def test_malformed_bioes_sequences_are_read_strictly(tags, strict, conlleval):
    assert read_spans(tags, "strict", "BIOES") == strict
    assert read_spans(tags, "conlleval", "BIOES") == conlleval
    task = NerTask(NerConfig(scheme="BIOES"), ["a", "b"])
    assert task.spans("x" * len(tags), [task.tags.index(t) for t in tags]) == strict
    # seqeval's strict IOBES mode finds as many gold entities (its support)
    if strict:
        assert seqeval_scores([tags], [tags], "strict", "BIOES")["overall"]["support"] == len(strict)


def test_an_unknown_or_bio_only_tag_is_refused():
    with pytest.raises(ValueError, match=r"unknown tag 'X-a': expected 'O' or B/I/E/S-TYPE \(BIOES\)"):
        read_spans(["X-a"], "strict", "BIOES")
    with pytest.raises(ValueError, match=r"^decoder.constrained: tag 'X-a' is not a BIOES tag \(O, B-X, I-X, E-X or S-X\)$"):
        tag_constraints(["O", "B-a", "S-a", "X-a"])


def test_the_bioes_masks_forbid_exactly_the_invalid_moves():
    start, transitions, end = tag_constraints(LABELS)
    assert [LABELS[j] for j in range(len(LABELS)) if start[j]] == ["O", "B-a", "S-a", "B-b", "S-b"]
    assert [LABELS[j] for j in range(len(LABELS)) if end[j]] == ["O", "E-a", "S-a", "E-b", "S-b"]
    for j, tag in enumerate(LABELS):
        assert start[j].item() == may_follow(None, tag) and end[j].item() == may_follow(tag, None), tag
    for (i, a), (j, b) in itertools.product(enumerate(LABELS), repeat=2):
        assert transitions[i, j].item() == may_follow(a, b), (a, b)
    allowed = {(a, b) for (i, a), (j, b) in itertools.product(enumerate(LABELS), repeat=2) if transitions[i, j]}
    assert ("B-a", "E-a") in allowed and ("I-a", "I-a") in allowed and ("E-a", "S-b") in allowed and ("S-a", "B-a") in allowed
    assert ("B-a", "O") not in allowed and ("B-a", "B-a") not in allowed and ("I-a", "S-a") not in allowed
    assert ("O", "E-a") not in allowed and ("S-a", "I-a") not in allowed and ("B-a", "E-b") not in allowed
    assert ("E-a", "I-a") not in allowed and ("I-b", "E-a") not in allowed
    # a BIO tag set keeps its old masks: every tag may end a text
    bio_start, _, bio_end = tag_constraints(["O", "B-a", "I-a"])
    assert bio_start.tolist() == [True, True, False] and bio_end.all()


def test_every_gold_bioes_sequence_of_cluener_dev_is_allowed(data_root):
    dataset = Cluener(CluenerConfig(), data_root)
    task = NerTask(NerConfig(scheme="BIOES"), dataset.labels())
    start, transitions, end = tag_constraints(task.tags)
    for example in dataset.load("dev"):
        tags = task.tag_ids(len(example.text), task.flat_spans(example.gold)[0]).tolist()
        assert start[tags[0]] and end[tags[-1]] and all(transitions[a, b] for a, b in zip(tags, tags[1:])), example.text


def best_allowed(start, transitions, end, emissions, masks) -> list[int]:
    return brute_force(start, transitions, end, emissions, *masks)


def test_constrained_decoding_is_the_best_valid_bioes_path():
    generator = torch.Generator().manual_seed(5)
    labels = LABELS[:5]  # one type keeps the enumeration small
    constraints = TagConstraints(labels)
    masks = (constraints.start, constraints.transitions, constraints.end)
    crf = CRF(len(labels), batch_first=True)
    softmax = SoftmaxDecoder(SoftmaxConfig(constrained=True, dropout=0.0), 6, labels).eval()
    invalid_free = 0
    for _ in range(12):
        with torch.no_grad():
            for param in (crf.start_transitions, crf.end_transitions, crf.transitions):
                param.copy_(torch.randn(param.shape, generator=generator) * 2)
        emissions = torch.randn(3, 4, len(labels), generator=generator) * 2
        mask = torch.arange(4) < torch.tensor([4, 2, 1]).unsqueeze(1)
        hidden = torch.randn(3, 4, 6, generator=generator) * 3
        with torch.no_grad():
            tags, free = viterbi(crf, emissions, mask, constraints), viterbi(crf, emissions, mask)
            soft, log_p = softmax.decode(hidden, mask), softmax.logits(hidden).log_softmax(-1)
        zeros = torch.zeros(len(labels))
        for row, length in enumerate([4, 2, 1]):
            expected = best_allowed(crf.start_transitions, crf.transitions, crf.end_transitions, emissions[row, :length], masks)
            assert tags[row, :length].tolist() == expected and valid([labels[i] for i in expected])
            assert soft[row, :length].tolist() == best_allowed(zeros, torch.zeros(5, 5), zeros, log_p[row, :length], masks)
            invalid_free += not valid([labels[i] for i in free[row, :length]])
    assert invalid_free > 5  # unconstrained, the same scores give invalid paths


def test_constrained_bioes_marginals_cover_only_the_allowed_paths():
    from test_marginals import brute_force, random_crf

    generator = torch.Generator().manual_seed(9)
    labels = LABELS[:5]
    constraints = TagConstraints(labels)
    decoder = CrfDecoder(CrfConfig(constrained=True, dropout=0.0), 5, labels).eval()
    for _ in range(3):
        start, transitions, end, emissions, mask = random_crf(generator, len(labels), batch=3, chars=4)
        masked = constraints.mask_scores(start, transitions, end)
        marginals = tag_marginals(*masked, emissions, mask)
        assert torch.isfinite(marginals).all()
        for row in range(3):
            length = int(mask[row].sum())
            expected, _ = brute_force(*masked, emissions[row], length)
            torch.testing.assert_close(marginals[row, :length].double(), expected, atol=1e-6, rtol=1e-5)
            assert marginals[row, length - 1, [1, 2]].abs().max() < 1e-12  # no B-/I- at the end
        with torch.no_grad():
            decoder.crf.start_transitions.copy_(start)
            decoder.crf.transitions.copy_(transitions)
            decoder.crf.end_transitions.copy_(end)
        decoder.emissions = lambda hidden, e=emissions: e  # type: ignore[method-assign]
        torch.testing.assert_close(decoder.marginals(emissions, mask), marginals)


SINGLE = ("张", "李", "赵")  # one-character names, so that S- tags are learnt


def add_single_character_names(corpus) -> dict[str, list[Example]]:
    """Append texts whose name is one character to the tiny corpus's splits."""
    added: dict[str, list[Example]] = {}
    for split, count in (("train", 24), ("dev", 9)):
        examples = []
        for i in range(count):
            name, place, company = SINGLE[i % 3], ("北京", "上海")[i % 2], ("华为", "腾讯公司", "IBM")[i % 3]
            text = f"{name}在{place}的{company}工作"
            spans = [Span(0, 1, "name"), Span(2, 2 + len(place), "address"), Span(3 + len(place), 3 + len(place) + len(company), "company")]
            examples.append(Example(text, spans))
        with (corpus.path / f"{split}.jsonl").open("a", encoding="utf-8") as stream:
            for e in examples:
                spans = [{"start": s.start, "end": s.end, "label": s.label} for s in e.gold]
                stream.write(json.dumps({"text": e.text, "spans": spans}, ensure_ascii=False) + "\n")
        added[split] = examples
    return added


def test_a_bioes_model_with_focal_loss_trains_saves_loads_and_exports(nlpfw_tiny_corpus, nlpfw_tiny_recipe, nlpfw_run, registry, tmp_path):
    added = add_single_character_names(nlpfw_tiny_corpus)
    recipe = nlpfw_tiny_recipe(task={"type": "ner.v1", "scheme": "bioes"},
                               decoder={"type": "softmax.v1", "loss": "focal", "focal_gamma": 2.0, "constrained": True})  # fmt: skip
    result, run_dir = nlpfw_run(recipe)
    assert result.exit_code == 0, result.output
    saved = json.loads((run_dir / "model" / "labels.json").read_text(encoding="utf-8"))
    assert saved["target_labels"] == NerTask(NerConfig(scheme="BIOES"), ["name", "address", "company"]).tags
    assert 'scheme = "BIOES"' in (run_dir / "model" / "recipe.toml").read_text(encoding="utf-8")
    assert 'loss = "focal"' in (run_dir / "model" / "recipe.toml").read_text(encoding="utf-8")

    model = nlpfw.load(run_dir)
    dev = nlpfw_tiny_corpus.dev + added["dev"]
    records = model.predict([e.text for e in added["dev"]])
    for example, record in zip(added["dev"], records):
        assert [(x["type"], x["start"], x["end"]) for x in record["entities"]] == [(s.label, s.start, s.end) for s in example.gold]
        assert record["entities"][0]["text"] == example.text[0]  # the one-character name, from an S- tag
    scores = model.evaluate(dev)
    assert scores["summary"]["f1"] > 0.9 and scores["scores"]["scheme"] == "BIOES", scores
    assert "strict IOBES mode" in scores["metric"]

    out = tmp_path / "bioes.onnx"
    export_onnx(run_dir, out, registry)
    sidecar = json.loads(out.with_name("bioes.onnx.json").read_text(encoding="utf-8"))
    assert sidecar["labels"] == saved["target_labels"] and sidecar["task_config"]["scheme"] == "BIOES"
    texts = [e.text for e in dev]
    onnx, _, _ = predict_split(OnnxModel(out, model.model.decoder), model.task, model.encode([Example(t) for t in texts]), 64, model.device)
    assert onnx == model.predictions(texts)

    # a recipe whose scheme no longer matches the saved tags is refused, not misread
    (run_dir / "model" / "recipe.toml").write_text(
        (run_dir / "model" / "recipe.toml").read_text(encoding="utf-8").replace('scheme = "BIOES"', 'scheme = "BIO"'), encoding="utf-8"
    )  # fmt: skip
    with pytest.raises(NlpfwError, match=r"labels.json's tags labels \(O, B-name, I-name, E-name, S-name, B-address, \.\.\. "
                                         r"\(13 in all\)\) are not those the task of recipe.toml gives \(O, B-name, I-name, "
                                         r"B-address, I-address, B-company, \.\.\. \(7 in all\)\)"):  # fmt: skip
        nlpfw.load(run_dir)


def test_crf_bioes_recipe_validates(registry):
    from pathlib import Path

    recipe = load_recipe(Path(__file__).resolve().parent.parent / "recipes" / "quickstart.toml", registry,
                         ["task.scheme=bioes", "decoder.constrained=true"])  # fmt: skip
    assert recipe.task.config.scheme == "BIOES"
