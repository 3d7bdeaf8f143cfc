"""End-to-end training through the CLI on a slice of CLUENER, and what the run folder holds."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

from nlpfw.cli import cli
from nlpfw_plugins.span_metrics import score_spans, seqeval_scores
from nlpfw_plugins.tags import bio_tags
from nlpfw.model import load_model
from nlpfw_plugins.cluener import Cluener, CluenerConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "dataset.limit=160", "encoder.hidden_size=32", "encoder.num_layers=1", "encoder.num_heads=2",
    "encoder.intermediate_size=64", "trainer.batch_size=16", "trainer.eval_batch_size=64",
]  # fmt: skip


def run_cli(recipe: Path, output: Path, *overrides: str):
    """`nlpfw run RECIPE -o OUTPUT --set ...` in this process."""
    args = ["run", str(recipe), "-o", str(output)]
    for item in overrides:
        args += ["--set", item]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def run_ok(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command to its end; fail the test with its output unless it exits with 0."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def train(tmp_path: Path, *overrides: str, recipe: str = "quickstart.toml", name: str = "run"):
    """A tiny model on 160 CLUENER texts: a few seconds."""
    output = tmp_path / name
    return run_cli(ROOT / "recipes" / recipe, output, *TINY, *overrides), output


@pytest.fixture(scope="module")
def crf_run(tmp_path_factory, data_root):
    return train(tmp_path_factory.mktemp("crf"), "trainer.epochs=2")


def test_run_prints_the_three_tables_and_the_folder(crf_run):
    result, output = crf_run
    assert result.exit_code == 0, result.output
    assert f"Run folder: {output}" in result.output.replace("\n", "")
    for heading in ("Speed", "Model (dev)", "Per-entity F1 (dev)", "Best model: epoch"):
        assert heading in result.output
    for timing in ("train_step_time", "train_epoch_time", "valid_step_time", "valid_epoch_time"):
        assert result.output.count(timing) == 3  # after each of 2 epochs and at the end
    assert "RTX 2070 (ref)" in result.output and "bert-base-chinese+CRF" in result.output
    assert "strict entity-level matching" in result.output


def test_run_folder_contents(crf_run, registry):
    _, output = crf_run
    assert sorted(p.name for p in output.iterdir()) == [
        "checkpoint", "curves.png", "labels.png", "metrics.jsonl", "model", "plugins.json", "recipe.toml",
        "report.json", "report.md", "report.txt",
    ]  # fmt: skip
    assert sorted(p.name for p in (output / "checkpoint").iterdir()) == ["meta.json", "model.safetensors", "state.pt"]
    recipe = tomllib.loads((output / "recipe.toml").read_text(encoding="utf-8"))
    assert recipe["trainer"]["epochs"] == 2 and recipe["encoder"]["hidden_size"] == 32
    assert recipe["trainer"]["lr"] == 1e-3 and recipe["decoder"]["type"] == "crf.v1"
    plugins = json.loads((output / "plugins.json").read_text(encoding="utf-8"))
    bert = next(p for p in plugins["plugins"] if p["plugin"] == "nlpfw_plugins.bert")
    assert bert["provides"] == ["encoder: bert.v1"] and bert["source"] == "builtin"
    assert plugins["environment"]["device"] == "cpu"
    lines = (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["speed"]["train_epoch_time"] > 0 and r["dev_loss"] > 0 for r in records)
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    best = max(records, key=lambda r: r["scores"]["overall"]["f1"])
    assert report["best"]["scores"] == best["scores"] and report["best_epoch"] == best["epoch"]
    assert report["data"]["train_examples"] == report["data"]["dev_examples"] == 160
    text = (output / "report.txt").read_text(encoding="utf-8")
    assert f"best dev F1 {best['scores']['overall']['f1']:.4f} at epoch {best['epoch']}" in text
    assert "Per-entity F1 (dev)" in text and "address" in text
    model = output / "model"
    assert sorted(p.name for p in model.iterdir()) == ["encoder", "labels.json", "model.safetensors", "recipe.toml"]
    assert (model / "encoder" / "config.json").is_file() and (model / "encoder" / "tokenizer.json").is_file()


def test_saved_model_reproduces_the_reported_scores_without_the_data(crf_run, registry, data_root, monkeypatch, tmp_path):
    _, output = crf_run
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    dev = Cluener(CluenerConfig(limit=160), data_root).load("dev")
    monkeypatch.setenv("NLPFW_DATA_ROOT", str(tmp_path / "nothing-here"))
    loaded = load_model(output / "model", registry)
    predicted = loaded.predictions([e.text for e in dev])
    scores = score_spans([e.gold for e in dev], predicted, loaded.task.entity_types)
    assert scores.overall.f1 == report["best"]["scores"]["overall"]["f1"]
    assert scores.overall.tp == report["best"]["scores"]["overall"]["tp"]
    for text, spans in zip([e.text for e in dev], predicted):
        assert all(0 <= s.start < s.end <= len(text) for s in spans)
    # the reported metric is seqeval's strict IOB2 F1 on the same predictions
    gold_tags = [bio_tags(len(e.text), e.gold) for e in dev]
    pred_tags = [bio_tags(len(e.text), p) for e, p in zip(dev, predicted)]
    strict = seqeval_scores(gold_tags, pred_tags)
    assert strict["overall"]["f1"] == pytest.approx(report["best"]["scores"]["overall"]["f1"], abs=1e-12)


def test_softmax_decoder_trains(tmp_path, data_root):
    result, output = train(tmp_path, "trainer.epochs=1", "decoder.type=\"softmax.v1\"")
    assert result.exit_code == 0, result.output
    record = json.loads((output / "metrics.jsonl").read_text(encoding="utf-8"))
    assert record["dev_loss"] > 0 and 0 <= record["scores"]["overall"]["f1"] <= 1


def test_early_stopping_patience(tmp_path, data_root):
    # A learning rate this small leaves dev F1 where it started, so epoch 2 is no better.
    result, output = train(tmp_path, "trainer.epochs=5", "trainer.patience=1", "trainer.lr=1e-12", "decoder.lr=1e-12")
    assert result.exit_code == 0, result.output
    assert "Early stop: no better dev F1 in 1 evaluations" in result.output
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    assert report["epochs_run"] == 2 and report["stopped_early"] is True and report["best_epoch"] == 1


NO_DROPOUT = ["encoder.dropout=0.0", "encoder.hidden_dropout=0.0", "encoder.attention_dropout=0.0", "decoder.dropout=0.0"]


def test_gradient_accumulation_matches_a_larger_batch(tmp_path, data_root):
    """Two accumulated batches of 8 make the same step as one batch of 16 (same examples, same order)."""
    # float32: under bf16 autocast (CPUs with AMX) rounding flips the sign of near-zero gradients
    common = ["trainer.max_steps=1", "trainer.epochs=1", "trainer.max_grad_norm=1e9", "trainer.amp=false", *NO_DROPOUT]
    big, big_dir = train(tmp_path, *common, "trainer.batch_size=16", name="big")
    small, small_dir = train(tmp_path, *common, "trainer.batch_size=8", "trainer.grad_accum_steps=2", name="small")
    half, half_dir = train(tmp_path, *common, "trainer.batch_size=8", name="half")
    assert big.exit_code == small.exit_code == half.exit_code == 0, big.output + small.output + half.output
    a, b, c = (safetensors.torch.load_file(d / "model" / "model.safetensors") for d in (big_dir, small_dir, half_dir))
    assert json.loads((small_dir / "metrics.jsonl").read_text())["step"] == 1
    for key in a:
        if key.endswith("attention.self.key.bias"):
            continue  # its exact gradient is 0 (softmax ignores a shift), so Adam steps on rounding noise
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    # the control: one plain batch of 8 is a different step, so the check above can fail
    assert max((a[k] - c[k]).abs().max().item() for k in a) > 1e-4


def test_max_steps_stops_training(tmp_path, data_root):
    result, output = train(tmp_path, "trainer.max_steps=3", "trainer.epochs=4")
    assert result.exit_code == 0, result.output
    records = [json.loads(l) for l in (output / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 3)]


def test_an_existing_run_folder_is_not_overwritten(crf_run):
    _, output = crf_run
    before = (output / "report.json").read_bytes()
    result = CliRunner().invoke(cli, ["run", str(ROOT / "recipes" / "quickstart.toml"), "-o", str(output)])
    assert result.exit_code == 1
    assert f"Error: output folder {output} already holds a run" in result.output
    assert "--overwrite" in result.output
    assert (output / "report.json").read_bytes() == before


def test_a_plugin_loaded_in_a_test_is_listed_and_trains_from_a_recipe(tmp_path, data_root, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "fixtures"))
    monkeypatch.delitem(__import__("sys").modules, "charplugin", raising=False)
    runner = CliRunner()
    listed = runner.invoke(cli, ["-p", "charplugin", "list-plugins", "--json"], catch_exceptions=False)
    record = next(r for r in json.loads(listed.output) if r["plugin"] == "charplugin")
    assert record["provides"] == ["encoder: hash_char.v1"] and record["source"] == "-p"

    recipe = tmp_path / "hash_char.toml"
    recipe.write_text(
        (ROOT / "recipes" / "quickstart.toml").read_text(encoding="utf-8").split("[encoder]")[0]
        + '[encoder]\ntype = "hash_char.v1"\ndim = 24\n\n[decoder]\ntype = "crf.v1"\n\n'
        + "[trainer]\nepochs = 2\nbatch_size = 16\nlr = 5e-3\n",
        encoding="utf-8",
    )
    output = tmp_path / "run"
    result = runner.invoke(
        cli, ["-p", "charplugin", "run", str(recipe), "-o", str(output), "--set", "dataset.limit=160"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    plugins = json.loads((output / "plugins.json").read_text(encoding="utf-8"))["plugins"]
    assert any(p["plugin"] == "charplugin" and p["provides"] == ["encoder: hash_char.v1"] for p in plugins)

    from nlpfw.plugins import build_registry, get_plugin_manager

    loaded = load_model(output / "model", build_registry(get_plugin_manager(load_entrypoints=False, modules=["charplugin"])))
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    dev = Cluener(CluenerConfig(limit=160), data_root).load("dev")
    scores = score_spans([e.gold for e in dev], loaded.predictions([e.text for e in dev]))
    assert scores.overall.f1 == report["best"]["scores"]["overall"]["f1"]


def test_a_split_with_no_labelled_texts_is_named(tmp_path, data_root):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "train.json").write_text("", encoding="utf-8")
    (folder / "dev.json").write_text((data_root / "cluener" / "dev.json").read_text(encoding="utf-8"), encoding="utf-8")
    result, output = train(tmp_path, f"dataset.path={folder}")
    assert result.exit_code == 1
    assert "Error: dataset: the train split of cluener.v1 has no labelled texts" in result.output
    assert not output.exists()


def test_texts_longer_than_the_window_are_windowed_in_training_evaluation_and_prediction(tmp_path, data_root, registry):
    # CLUENER texts are up to 50 characters: a 24-character window cuts most of them.
    result, output = train(tmp_path, "trainer.epochs=3", "trainer.window=24", "trainer.stride=8", "dataset.limit=400")
    assert result.exit_code == 0, result.output
    assert "are longer than the 24-character window; they are read in windows overlapping by 8" in " ".join(result.output.split())
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    data = report["data"]
    assert (data["window"], data["stride"]) == (24, 8)
    assert data["train_windowed"] > 250 and data["train_windows"] > data["train_examples"] == 400
    dev = Cluener(CluenerConfig(limit=400), data_root).load("dev")
    loaded = load_model(output / "model", registry)
    predicted = loaded.predictions([e.text for e in dev])
    # dev is scored on whole texts: the reloaded model windows the same way and gets the same F1
    f1 = report["best"]["scores"]["overall"]["f1"]
    assert f1 > 0.05 and score_spans([e.gold for e in dev], predicted).overall.f1 == f1
    long = "".join(e.text for e in dev[:60])  # about 2,500 characters in one text
    [spans] = loaded.predictions([long])
    assert all(0 <= s.start < s.end <= len(long) for s in spans) and len(set(spans)) == len(spans)
