"""Nothing lost: a run killed with SIGKILL mid-epoch and resumed ends exactly as an uninterrupted
one; Ctrl-C saves a checkpoint and says how to resume; a NaN loss stops at its step."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner
from test_training import ROOT, TINY, run_ok

from nlpfw import checkpoint
from nlpfw.cli import cli
from nlpfw.errors import NlpfwError

RECIPE = ROOT / "recipes" / "quickstart.toml"
# 480 texts in batches of 16: 30 batches an epoch, a checkpoint every 4 steps
SETTINGS = [*TINY, "dataset.limit=480", "trainer.epochs=2", "trainer.checkpoint_every=4", "trainer.log_every=3"]


def command(output: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "nlpfw", "run", str(RECIPE), "-o", str(output)]
    for item in SETTINGS:
        args += ["--set", item]
    return args + list(extra)


def meta(output: Path) -> dict | None:
    try:
        return json.loads((output / "checkpoint" / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def start_and_wait(output: Path, until, args: list[str] | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a run (`args`, default the tiny quickstart into `output`) and wait until
    `until(meta)` holds for its checkpoint in `output` (polling every 2 ms)."""
    args = command(output) if args is None else args
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = meta(output)
        if state is not None and until(state):
            return process
        if process.poll() is not None:
            raise AssertionError(f"the run ended first:\n{process.stdout.read()}")
        time.sleep(0.002)
    process.kill()
    raise AssertionError("no checkpoint in time")


def comparable(output: Path) -> list[dict]:
    """metrics.jsonl without the timings."""
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    for record in records:
        record.pop("speed")
    return records


def weights(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root):
    output = tmp_path_factory.mktemp("whole") / "run"
    run_ok(command(output))
    return output


def test_sigkill_mid_epoch_then_resume_gives_the_same_run(uninterrupted, tmp_path):
    output = tmp_path / "run"
    # killed right after the first mid-epoch checkpoint of epoch 1: batch 8 of 30
    process = start_and_wait(output, lambda m: m["epoch"] == 1 and m["batch"] > 0)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    saved = meta(output)
    assert saved["epoch"] == 1 and 0 < saved["batch"] < 30, saved  # the run stopped mid-epoch
    assert not (output / "report.json").exists()

    result = run_ok([sys.executable, "-m", "nlpfw", "run", str(RECIPE), "--resume", str(output)])
    flat = " ".join(result.stdout.split())
    assert f"Resuming from {output / 'checkpoint'}: epoch 1, batch {saved['batch']}, step {saved['step']}" in flat
    assert comparable(output) == comparable(uninterrupted)
    assert_same_weights(output / "model" / "model.safetensors", uninterrupted / "model" / "model.safetensors")
    assert_same_weights(output / "checkpoint" / "model.safetensors", uninterrupted / "checkpoint" / "model.safetensors")
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    expected = json.loads((uninterrupted / "report.json").read_text(encoding="utf-8"))
    assert report["best"]["scores"] == expected["best"]["scores"] and report["best_epoch"] == expected["best_epoch"]


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(uninterrupted, tmp_path):
    output = tmp_path / "run"
    process = start_and_wait(output, lambda m: m["epoch"] == 1 and m["batch"] > 0)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    flat = " ".join(out.split())
    assert "Stopping after this step to save a checkpoint" in flat
    saved = meta(output)
    where = f"epoch {saved['epoch']}, batch {saved['batch']}, step {saved['step']}"
    assert f"Interrupted at {where}; the checkpoint is in {output / 'checkpoint'}" in flat
    assert f"Resume with: nlpfw run {RECIPE} --resume {output}" in flat

    result = subprocess.run(command(output), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1  # a run never overwrites another run's folder unless asked
    assert f"output folder {output} already holds a run; choose another with --output" in result.stderr
    run_ok([sys.executable, "-m", "nlpfw", "run", str(RECIPE), "--resume", str(output)])
    assert comparable(output) == comparable(uninterrupted)
    assert_same_weights(output / "model" / "model.safetensors", uninterrupted / "model" / "model.safetensors")


def test_sigterm_saves_a_checkpoint_and_exits_143(uninterrupted, tmp_path):
    output = tmp_path / "run"
    process = start_and_wait(output, lambda m: m["epoch"] == 1 and m["batch"] > 0)
    process.send_signal(signal.SIGTERM)  # what kill, Docker, Kubernetes and Slurm send
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 143, out
    flat = " ".join(out.split())
    assert "Stopping after this step to save a checkpoint (SIGTERM again to quit at once)" in flat
    saved = meta(output)
    where = f"epoch {saved['epoch']}, batch {saved['batch']}, step {saved['step']}"
    assert f"Interrupted at {where}; the checkpoint is in {output / 'checkpoint'}" in flat
    assert "Traceback" not in out and not (output / ".nlpfw.lock").exists()
    run_ok([sys.executable, "-m", "nlpfw", "run", str(RECIPE), "--resume", str(output)])
    assert comparable(output) == comparable(uninterrupted)
    assert_same_weights(output / "model" / "model.safetensors", uninterrupted / "model" / "model.safetensors")


def test_a_corrupt_checkpoint_is_named(uninterrupted, tmp_path):
    broken = tmp_path / "run"
    (broken / "checkpoint").mkdir(parents=True)
    for name in ("model.safetensors", "meta.json", "recipe.toml"):
        source = uninterrupted / ("checkpoint" if name != "recipe.toml" else "") / name
        (broken / ("checkpoint" if name != "recipe.toml" else "") / name).write_bytes(source.read_bytes())
    state = (uninterrupted / "checkpoint" / "state.pt").read_bytes()
    (broken / "checkpoint" / "state.pt").write_bytes(state[: len(state) // 2])  # a torn file
    with pytest.raises(NlpfwError, match=r"checkpoint .*checkpoint is corrupt or unreadable .*; delete .* to start"):
        checkpoint.load(broken)
    result = CliRunner().invoke(cli, ["run", str(RECIPE), "--resume", str(broken)])
    assert result.exit_code == 1
    assert f"Error: checkpoint {broken / 'checkpoint'} is corrupt or unreadable" in result.output


def test_resume_without_a_checkpoint_is_named(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(RECIPE), "--resume", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert f"Error: --resume: {tmp_path / 'none'} is not a folder: no checkpoint to resume from" in result.output


def nan_run(output: Path, *extra: str):
    """A run whose 7th training batch has a NaN loss (the `nan_crf.v1` decoder of tests/faulty_plugin.py)."""
    args = ["-p", "faulty_plugin", "run", str(RECIPE), "-o", str(output), "--set", "decoder.type=nan_crf.v1"]
    for item in [*SETTINGS, *extra]:
        args += ["--set", item]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_a_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, data_root):
    output = tmp_path / "run"
    result = nan_run(output)
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert (
        "Error: the training loss became NaN or infinite at step 7 (epoch 1, batch 7); the run stopped. "
        f"The last good checkpoint, {output / 'checkpoint'}, is kept. "
        'Lower the learning rate, or set trainer.on_nan = "skip" to leave such batches out.'
    ) in flat
    assert meta(output)["step"] == 4  # written before the bad batch, and not replaced after it
    first = weights(output / "checkpoint" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in first.values())


def test_on_nan_skip_leaves_the_batch_out(tmp_path, data_root):
    output = tmp_path / "run"
    result = nan_run(output, 'trainer.on_nan="skip"', "trainer.epochs=1")
    assert result.exit_code == 0, result.output
    assert "Skipped batch 7 of epoch 1: the loss is nan" in " ".join(result.output.split())
    final = weights(output / "checkpoint" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in final.values())
    assert json.loads((output / "report.json").read_text(encoding="utf-8"))["epochs_run"] == 1
