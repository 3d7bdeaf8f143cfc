"""nlpfw-globalpointer as users meet it: installed, listed, trained from a recipe, predicting.

Uses nlpfw's pytest fixtures for plugin authors (`nlpfw.testing`, loaded through the
`pytest11` entry point): no conftest here.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

import nlpfw
from nlpfw.cli import cli
from nlpfw_plugins.span_metrics import score_spans
from nlpfw.errors import NlpfwError
from nlpfw.export import export_onnx
from nlpfw.plugins import LOAD_PLUGINS_ENV, build_registry, get_plugin_manager

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
GP = {"type": "global_pointer.v1", "head_size": 16, "lr": 1e-2, "dropout": 0.0}


def list_plugins() -> dict[str, dict]:
    result = CliRunner().invoke(cli, ["list-plugins", "--json"])
    assert result.exit_code == 0, result.output
    return {r["plugin"]: r for r in json.loads(result.stdout)}


def test_list_plugins_shows_the_distribution_and_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOAD_PLUGINS_ENV, raising=False)
    record = list_plugins()["global_pointer"]
    assert record == {
        "plugin": "global_pointer",
        "version": version("nlpfw-globalpointer"),
        "source": "nlpfw-globalpointer",
        "hooks": ["register_decoders"],
        "provides": ["decoder: global_pointer.v1"],
        "error": None,
    }
    assert record["version"] == "0.1.0"


@pytest.mark.parametrize(("value", "loaded"), [("", False), ("crf,other", False), ("nlpfw-globalpointer", True), ("global_pointer", True)])
def test_load_plugins_env_can_leave_it_out(monkeypatch: pytest.MonkeyPatch, value: str, loaded: bool) -> None:
    monkeypatch.setenv(LOAD_PLUGINS_ENV, value)
    assert ("global_pointer" in list_plugins()) is loaded
    result = CliRunner().invoke(cli, ["validate", str(RECIPES / "bert_globalpointer_cluener.toml")])
    if loaded:
        assert result.exit_code == 0, result.output
        assert result.stdout.endswith("ok (ner.v1, cluener.v1, bert.v1 + global_pointer.v1)\n")
    else:
        assert result.exit_code == 1
        assert "decoder.type  unknown decoder 'global_pointer.v1'" in result.stderr
        assert "available: classifier.v1, crf.v1, mlm_head.v1, softmax.v1" in result.stderr


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.toml")))
def test_recipes_validate(recipe: str) -> None:
    result = CliRunner().invoke(cli, ["validate", str(RECIPES / recipe)])
    assert result.exit_code == 0, result.output


def test_trains_from_a_recipe_and_predicts_exact_offsets(nlpfw_tiny_recipe, nlpfw_run, nlpfw_tiny_corpus, tmp_path) -> None:
    recipe = nlpfw_tiny_recipe(name="gp", decoder=GP)
    result, trained = nlpfw_run(recipe)
    assert result.exit_code == 0, result.output
    report = json.loads((trained / "report.json").read_text(encoding="utf-8"))
    assert report["best"]["scores"]["overall"]["f1"] > 0.8, report["best"]["scores"]["overall"]
    plugins = json.loads((trained / "plugins.json").read_text(encoding="utf-8"))["plugins"]
    [gp] = [p for p in plugins if p["plugin"] == "global_pointer"]
    assert gp["source"] == "nlpfw-globalpointer"

    model = nlpfw.load(trained)
    dev = nlpfw_tiny_corpus.dev
    predicted = [r["entities"] for r in model.predict([e.text for e in dev])]
    assert sum(len(p) for p in predicted) > 0
    for example, entities in zip(dev, predicted):
        for entity in entities:
            assert example.text[entity["start"] : entity["end"]] == entity["text"]
            assert entity["type"] in ("name", "address", "company")
    spans = model.predictions([e.text for e in dev])
    scores = score_spans([e.gold for e in dev], spans, model.task.entity_types)
    assert scores.to_dict()["overall"]["f1"] == pytest.approx(report["best"]["scores"]["overall"]["f1"])
    # Latin words, digits, spaces and emoji keep their offsets
    [found] = [r["entities"] for r in model.predict(["Tom在New York的IBM工作"])]
    assert {(e["text"], e["start"], e["end"]) for e in found} <= {("Tom", 0, 3), ("New York", 4, 12), ("IBM", 13, 16)}

    # a span decoder's output size depends on the data: a clear message instead of an export
    with pytest.raises(NlpfwError, match=r"global_pointer.v1 cannot be exported to ONNX: its output \(spans\) has a size that depends on the data"):
        export_onnx(trained, tmp_path / "gp.onnx", build_registry(get_plugin_manager()))


def test_gold_spans_reach_the_loss_through_windows(nlpfw_tiny_recipe, nlpfw_run, nlpfw_tiny_corpus) -> None:
    """Windows of 12 characters (the texts run to 30): spans are learnt window by window and
    merged back onto whole texts for scoring."""
    recipe = nlpfw_tiny_recipe(name="gp_windows", decoder=GP, trainer={"window": 12, "stride": 8, "epochs": 4})
    result, run_dir = nlpfw_run(recipe)
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    assert report["data"]["train_windowed"] > 0 and report["data"]["window"] == 12
    assert report["best"]["scores"]["overall"]["f1"] > 0.6, report["best"]["scores"]["overall"]
    longest = max(nlpfw_tiny_corpus.dev, key=lambda e: len(e.text))
    for entity in nlpfw.load(run_dir).predict([longest.text])[0]["entities"]:
        assert longest.text[entity["start"] : entity["end"]] == entity["text"]




def write_conll(path: Path, examples) -> None:
    """BIO CoNLL lines (one character and its tag a line) of the examples without whitespace."""
    lines = []
    for example in examples:
        if any(c.isspace() for c in example.text):
            continue
        tags = ["O"] * len(example.text)
        for span in example.gold:
            tags[span.start : span.end] = [f"B-{span.label}"] + [f"I-{span.label}"] * (span.end - span.start - 1)
        lines += [f"{c} {t}" for c, t in zip(example.text, tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_trains_on_a_conll_corpus(nlpfw_tiny_recipe, nlpfw_run, nlpfw_tiny_corpus, tmp_path) -> None:
    folder = tmp_path / "conll"
    folder.mkdir()
    write_conll(folder / "train.txt", nlpfw_tiny_corpus.train)
    write_conll(folder / "dev.txt", nlpfw_tiny_corpus.dev)
    recipe = nlpfw_tiny_recipe(name="gp_conll", decoder=GP, dataset={"type": "conll.v1", "path": str(folder)},
                               trainer={"epochs": 4})  # fmt: skip
    result, run_dir = nlpfw_run(recipe)
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    assert report["data"]["dev_annotations"] > 0
    assert report["best"]["scores"]["overall"]["f1"] > 0.5, report["best"]["scores"]["overall"]
