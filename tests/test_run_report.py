"""A tiny BiLSTM run end to end: reproducible metrics, the run record, report.md and the plots,
`nlpfw report`, `nlpfw compare`, loading the saved run, and TensorBoard logging."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import nlpfw
from nlpfw.cli import cli
from nlpfw.plots import CURVES_SIZE, LABELS_SIZE
from nlpfw_plugins.cluener import Cluener, CluenerConfig

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "bilstm_crf_cluener.toml"
TINY = [
    "dataset.limit=320", "encoder.embedding_size=32", "encoder.hidden_size=32", "encoder.num_layers=2",
    "encoder.bigram_size=8", "trainer.epochs=3", "trainer.batch_size=8", "trainer.lr=1e-2", "decoder.lr=5e-2",
]  # fmt: skip


def run_cli(output: Path, *overrides: str, recipe: Path = RECIPE, tiny: bool = True):
    args = ["run", str(recipe), "-o", str(output)]
    for item in [*(TINY if tiny else ()), *overrides]:
        args += ["--set", item]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root):
    """A tiny recipe; the same again from the recipe.toml the first run recorded; another seed."""
    root = tmp_path_factory.mktemp("bilstm")
    threads = torch.get_num_threads()
    results = {
        "a": run_cli(root / "a"),
        "b": run_cli(root / "b", recipe=root / "a" / "recipe.toml", tiny=False),
        "seed7": run_cli(root / "seed7", "trainer.seed=7"),
    }
    for name, result in results.items():
        assert result.exit_code == 0, f"{name}: {result.output}"
    assert torch.get_num_threads() == threads  # the recipe's trainer.threads = 1 held for its runs only
    return {name: root / name for name in results}


def metrics(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    for record in records:
        del record["speed"]  # timings are the one thing that may differ
    return records


def test_same_recipe_and_seed_give_identical_metrics(runs):
    """Run b repeats run a from nothing but a's recipe.toml."""
    first, second, other = (metrics(runs[name]) for name in ("a", "b", "seed7"))
    assert [r["epoch"] for r in first] == [1, 2, 3]
    assert first == second  # every loss, score and count, to the last digit, from the recorded recipe
    assert first[-1]["scores"]["overall"]["tp"] > 0  # it learnt something
    assert other != first  # the control: the seed does change the run


def test_run_folder_records_what_repeating_it_needs(runs, data_root):
    run = runs["a"]
    recorded = json.loads((run / "plugins.json").read_text(encoding="utf-8"))
    env = recorded["environment"]
    for key in ("nlpfw", "python", "torch", "transformers", "numpy", "pytorch-crf", "platform", "device", "threads"):
        assert env[key], key
    assert env["device"] == "cpu" and env["threads"] == 1 and recorded["seed"] == 42
    assert recorded["data_root"] == str(data_root)
    assert [Path(f["path"]).name for f in recorded["data_files"]["train"]] == ["train.json"]
    assert all(len(f["sha256"]) == 64 for split in recorded["data_files"].values() for f in split)
    assert recorded["repeat"] == f"nlpfw run {run / 'recipe.toml'} -o NEW_RUN_DIR"
    bilstm = next(p for p in recorded["plugins"] if p["plugin"] == "nlpfw_plugins.bilstm")
    assert bilstm["provides"] == ["encoder: bilstm.v1"]
    recipe = (run / "recipe.toml").read_text(encoding="utf-8")
    assert 'type = "bilstm.v1"' in recipe and "seed = 42" in recipe and "hidden_size = 32" in recipe


def test_saved_run_loads_predicts_and_reproduces_its_score(runs, data_root, registry, monkeypatch, tmp_path):
    run = runs["a"]
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    dev = Cluener(CluenerConfig(limit=320), data_root).load("dev")
    assert json.loads((run / "model" / "encoder" / "vocab.json").read_text(encoding="utf-8"))["chars"][:2] == [
        "[PAD]", "[UNK]",
    ]  # fmt: skip
    monkeypatch.setenv("NLPFW_DATA_ROOT", str(tmp_path / "nothing-here"))
    model = nlpfw.load(run)
    scores = model.evaluate(dev)["scores"]["overall"]
    assert scores == report["best"]["scores"]["overall"]
    text = "我用iPhone6s在CSOL里打了1234567890分，去了没见过的嬲"
    [record] = model.predict([text])
    entities = record["entities"]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def png_distinct_rows(path: Path) -> int:
    """Distinct pixel rows of an 8-bit RGBA PNG (what matplotlib's Agg writes): a blank image has one."""
    data = path.read_bytes()
    width, height = png_size(path)
    assert data[24:26] == bytes([8, 6]), "expected 8-bit RGBA"
    chunks, at = b"", 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IDAT":
            chunks += data[at + 8 : at + 8 + length]
        at += 12 + length
    raw = zlib.decompress(chunks)
    row = 1 + 4 * width
    assert len(raw) == row * height
    return len({raw[i : i + row] for i in range(0, len(raw), row)})


def test_report_files_hold_the_tables_and_the_plots(runs):
    run = runs["a"]
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    best = report["best"]
    assert report["labels"] == sorted(best["scores"]["by_type"]) and len(report["labels"]) == 10
    md = (run / "report.md").read_text(encoding="utf-8")
    f1 = best["scores"]["overall"]["f1"]
    assert md.startswith(f"# bilstm_crf_cluener: best dev F1 {f1:.4f} at epoch {best['epoch']}\n")
    for heading in ("### Speed", "### Model (dev)", "### Per-entity F1 (dev)", "## By epoch"):
        assert f"\n{heading}\n" in md, heading
    assert "| timing | ours: CPU" in md and "| RTX 2070 (ref) | M1 Air (ref) |" in md
    assert "| entity | ours | support | bert-base-chinese+CRF | bert-base | roberta-wwm-large-ext | BiLSTM+CRF | human |" in md
    for entity, row in best["scores"]["by_type"].items():
        assert f"| {entity} | {row['f1'] * 100:.2f} | {row['support']} |" in md, entity
    assert "| name | " in md and "| 74.04 | 74.49 |" in md  # the published columns beside ours
    assert f"| ours | {best['scores']['overall']['precision']:.4f} |" in md
    assert "![loss and dev scores by epoch](curves.png)" in md and "![per-entity F1](labels.png)" in md
    for record in metrics(run):
        assert f"| {record['epoch']} | {record['train_loss']:.4f} | {record['dev_loss']:.4f} |" in md
    text = (run / "report.txt").read_text(encoding="utf-8")
    assert text.startswith(f"bilstm_crf_cluener: best dev F1 {f1:.4f}") and "Per-entity F1 (dev)" in text
    assert png_size(run / "curves.png") == CURVES_SIZE
    assert png_size(run / "labels.png") == LABELS_SIZE
    for name in ("curves.png", "labels.png"):
        assert png_distinct_rows(run / name) > 50, f"{name} looks blank"


def test_report_command_rebuilds_the_same_files(runs, tmp_path):
    run = shutil.copytree(runs["a"], tmp_path / "copy")
    before = (run / "report.md").read_text(encoding="utf-8"), (run / "report.txt").read_text(encoding="utf-8")
    for name in ("report.md", "report.txt", "curves.png", "labels.png"):
        (run / name).unlink()
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 0, result.output
    f1 = json.loads((run / "report.json").read_text(encoding="utf-8"))["best"]["scores"]["overall"]["f1"]
    best = json.loads((run / "report.json").read_text(encoding="utf-8"))["best_epoch"]
    assert result.output.splitlines()[0] == f"bilstm_crf_cluener: best dev F1 {f1:.4f} at epoch {best}"
    for name in ("report.txt", "report.md", "curves.png", "labels.png"):
        assert f"wrote {run / name}" in result.output
    assert ((run / "report.md").read_text(encoding="utf-8"), (run / "report.txt").read_text(encoding="utf-8")) == before
    assert png_size(run / "labels.png") == LABELS_SIZE
    assert not list(run.glob(".*.tmp"))  # written atomically, nothing left behind


def test_report_command_errors_name_the_file(runs, tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert f"Error: {tmp_path}: no report.json; is it a finished run folder" in result.output
    run = shutil.copytree(runs["a"], tmp_path / "broken")
    with (run / "metrics.jsonl").open("a", encoding="utf-8") as stream:
        stream.write("{not json\n")
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 1
    assert f"Error: {run / 'metrics.jsonl'}:4: not JSON" in result.output  # after the 3 epochs' lines
    result = CliRunner().invoke(cli, ["compare", str(runs["a"]), str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and f"Error: {tmp_path / 'nowhere'}: no such run folder" in result.output


def test_compare_prints_runs_side_by_side(runs):
    result = CliRunner().invoke(cli, ["compare", str(runs["a"]), str(runs["seed7"])], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Runs compared" in lines[0]
    header = next(line for line in lines if "seed7" in line)
    assert [cell.strip() for cell in header.strip("┃").split("┃")] == ["", "a", "seed7"]
    reports = [json.loads((runs[n] / "report.json").read_text(encoding="utf-8")) for n in ("a", "seed7")]

    def row(label: str) -> list[str]:
        found = next(line for line in lines if line.startswith(f"│ {label} "))
        return [cell.strip() for cell in found.strip("│").split("│")[1:]]

    for key, label in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
        assert row(label) == [f"{r['best']['scores']['overall'][key]:.4f}" for r in reports]
    assert row("dev loss") == [f"{r['best']['dev_loss']:.4f}" for r in reports]
    assert row("best epoch") == [f"{r['best_epoch']} of 3" for r in reports]
    for entity in reports[0]["labels"]:
        assert row(entity) == [f"{r['best']['scores']['by_type'][entity]['f1'] * 100:.2f}" for r in reports]


def test_tensorboard_logs_each_epoch(tmp_path, data_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_cli(tmp_path / "run", "trainer.tensorboard=true", "dataset.limit=48")
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    records = metrics(tmp_path / "run")
    f1 = events.Scalars("dev/f1")
    assert [e.step for e in f1] == [1, 2, 3]
    assert [e.value for e in f1] == pytest.approx([r["scores"]["overall"]["f1"] for r in records])
    assert [e.value for e in events.Scalars("loss/train")] == pytest.approx([r["train_loss"] for r in records])
    assert "dev_f1/address" in events.Tags()["scalars"] and "speed/train_epoch_time" in events.Tags()["scalars"]


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, data_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if it were not installed
    result = CliRunner().invoke(cli, ["run", str(RECIPE), "-o", str(tmp_path / "run"), "--set", "trainer.tensorboard=true"])
    assert result.exit_code == 1
    assert ("Error: TensorBoard logging (trainer.tensorboard = true, or a tensorboard.v1 callback) needs the "
            "tensorboard package: pip install tensorboard") in result.output
    assert not (tmp_path / "run").exists()  # stopped before anything was written
