"""Run folders that never lie: one run per folder (a lock), --overwrite replaces a run whole,
and a run killed at any moment, even inside the model and checkpoint writes, is resumable to
exactly the uninterrupted run's result, or refused with a clear message."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_resume import assert_same_weights, comparable
from test_training import ROOT, TINY, run_ok
from test_writes import leftovers

from nlpfw import checkpoint, io, rundir
from nlpfw.cli import cli
from nlpfw.modelcheck import validate_model_dir

RECIPE = ROOT / "recipes" / "quickstart.toml"
# 160 texts in batches of 16: 10 batches an epoch, a checkpoint every 4 steps, 2 epochs
SETTINGS = [*TINY, "trainer.epochs=2", "trainer.checkpoint_every=4"]


def command(output: Path, *settings: str) -> list[str]:
    args = [sys.executable, "-m", "nlpfw", "run", str(RECIPE), "-o", str(output)]
    for item in [*SETTINGS, *settings]:
        args += ["--set", item]
    return args


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_folder_another_run_holds_is_refused_naming_it(tmp_path):
    folder = tmp_path / "run"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "state.pt").write_bytes(b"")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {"folder": rundir._identity(folder), "pid": other.pid, "host": socket.gethostname(),
                 "start": rundir._start_time(other.pid), "since": "2026-12-01 10:00:00"}  # fmt: skip
        (folder / rundir.LOCK).write_text(json.dumps(owner), encoding="utf-8")
        result = invoke("run", RECIPE, "-o", folder)
        assert result.exit_code == 1
        assert " ".join(result.output.split()) == (
            f"Error: run folder {folder} is in use by another run (pid {other.pid} on {socket.gethostname()}, "
            f"since 2026-12-01 10:00:00); wait for it to end, or choose another folder. If that process is gone, "
            f"delete {folder / rundir.LOCK}"
        )
        result = invoke("run", RECIPE, "--resume", folder)  # --resume takes the lock too
        assert result.exit_code == 1 and "is in use by another run" in result.output
        # a copy of the folder (a backup of a live run) is not locked by the original's owner
        shutil.copytree(folder, tmp_path / "copy")
        rundir.claim(tmp_path / "copy", resume=True).release()
        assert not (tmp_path / "copy" / rundir.LOCK).exists()
    finally:
        other.kill()
        other.wait()
    # the process is gone: its lock is stale and taken over (the folder is refused only for what it holds)
    lock = rundir.claim(folder, resume=True)
    assert json.loads((folder / rundir.LOCK).read_text(encoding="utf-8"))["pid"] == os.getpid()
    lock.release()
    assert [p.name for p in folder.iterdir()] == ["checkpoint"]  # released: no lock left behind


def test_two_runs_into_one_folder_at_once_never_mix(tmp_path, data_root):
    folder = tmp_path / "same"
    runs = [subprocess.Popen(command(folder, f"trainer.seed={seed}", "trainer.epochs=1"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for seed in (1, 2)]  # fmt: skip
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, _, err in results if code == 1)
    flat = " ".join(refused.split())
    assert f"Error: run folder {folder} is in use by another run" in flat or (
        f"Error: output folder {folder} already holds a run" in flat
    ), flat
    winner = 1 + [code for code, _, _ in results].index(0)
    recipe = tomllib.loads((folder / "recipe.toml").read_text(encoding="utf-8"))
    assert recipe["trainer"]["seed"] == winner
    assert json.loads((folder / "plugins.json").read_text(encoding="utf-8"))["seed"] == winner
    assert tomllib.loads((folder / "model" / "recipe.toml").read_text(encoding="utf-8"))["trainer"]["seed"] == winner
    assert not (folder / rundir.LOCK).exists()


def fake_old_run(folder: Path) -> None:
    for name in ("checkpoint", "tensorboard", "model"):
        (folder / name).mkdir(parents=True)
    (folder / "checkpoint" / "state.pt").write_bytes(b"old")
    for name in ("recipe.toml", "metrics.jsonl", "report.json", "report.md"):
        (folder / name).write_text("old\n", encoding="utf-8")


def test_overwrite_leaves_nothing_of_the_old_run(tmp_path, data_root):
    folder = tmp_path / "run"
    fake_old_run(folder)
    # the new run dies before its first checkpoint (here: its data folder is missing)
    result = invoke("run", RECIPE, "-o", folder, "--overwrite", "--set", f"dataset.path={tmp_path / 'nope'}")
    assert result.exit_code == 1
    assert result.output.endswith(f"\nError: dataset.path: folder not found: {tmp_path / 'nope'}\n")
    assert sorted(p.name for p in folder.iterdir()) == []  # nothing of the old run survives
    result = invoke("run", RECIPE, "--resume", folder)
    assert result.exit_code == 1
    assert f"Error: --resume: {folder} has no checkpoint/: no checkpoint to resume from" in " ".join(result.output.split())


def test_a_folder_that_holds_no_run_is_never_emptied(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me", encoding="utf-8")
    for extra in ([], ["--overwrite"]):
        result = invoke("run", RECIPE, "-o", folder, *extra)
        assert result.exit_code == 1
        assert " ".join(result.output.split()) == (
            f"Error: output folder {folder} is not empty and holds no run (notes.txt); nlpfw writes a run only into "
            "a new or empty folder, or replaces a run with --overwrite"
        )
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_an_incomplete_checkpoint_is_named_as_such(tmp_path):
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    result = invoke("run", RECIPE, "--resume", tmp_path / "run")
    assert result.exit_code == 1
    assert (
        f"Error: --resume: {tmp_path / 'run'} has a checkpoint/ with no state.pt in it (an incomplete checkpoint): "
        "no checkpoint to resume from"
    ) in " ".join(result.output.split())


# Fault injection: NLPFW_TEST_KILL_AT=N makes the run SIGKILL itself at the Nth write stage
# (nlpfw.io.fault_point). The stages come from an uninterrupted run's log of them.
QUICK_POINTS = (
    ("checkpoint complete", 1),  # the first checkpoint, written but not yet in place: nothing to resume
    ("model staged", 1),  # epoch 1's model written beside model/, its checkpoint not yet
    ("checkpoint swapped in", 3),  # epoch 1's checkpoint in place, its model not yet swapped in
    ("model swapped in", 1),
)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, data_root):
    """The uninterrupted run, and the write stages it went through, in order."""
    output = tmp_path_factory.mktemp("whole") / "run"
    log = output.parent / "stages.log"
    run_ok(command(output), env={**os.environ, io.STAGE_LOG: str(log)})
    stages = [line.split("\t")[1] for line in log.read_text(encoding="utf-8").splitlines()]
    return output, stages


def kill_and_check(whole_run: Path, number: int, stage: str, folder: Path) -> str:
    """Kill a run at write stage `number`; the folder must resume to the whole run's result or
    be refused with a clear message. Returns which."""
    killed = subprocess.run(command(folder), capture_output=True, text=True, timeout=300,
                            env={**os.environ, io.KILL_AT: str(number)})  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, f"stage {number} ({stage}) was not reached:\n{killed.stderr}"
    if (folder / "model").exists():  # never a half model: the previous whole one, or the new one
        validate_model_dir(folder / "model")
    if checkpoint.find(folder) is None:
        result = invoke("run", RECIPE, "--resume", folder)
        assert result.exit_code == 1, result.output
        assert "no checkpoint to resume from" in " ".join(result.output.split())
        if rundir.holds_run(folder):  # a new run goes elsewhere, or replaces it with --overwrite
            result = invoke("run", RECIPE, "-o", folder)
            assert result.exit_code == 1
            assert f"Error: output folder {folder} already holds a run" in " ".join(result.output.split())
        else:  # killed before its first file: nothing but leftovers, which the next run removes
            assert {p.name for p in folder.iterdir()} - set(leftovers(folder)) <= {rundir.LOCK}
        return "refused"
    resumed = subprocess.run([sys.executable, "-m", "nlpfw", "run", str(RECIPE), "--resume", str(folder)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, f"stage {number} ({stage}):\n{resumed.stdout}{resumed.stderr}"
    assert comparable(folder) == comparable(whole_run), f"stage {number} ({stage})"
    assert_same_weights(folder / "model" / "model.safetensors", whole_run / "model" / "model.safetensors")
    assert json.loads((folder / "report.json").read_text(encoding="utf-8"))["best"]["scores"] == (
        json.loads((whole_run / "report.json").read_text(encoding="utf-8"))["best"]["scores"]
    )
    assert leftovers(folder) == [] and not (folder / rundir.LOCK).exists(), f"stage {number} ({stage})"
    return "resumed"


def nth(stages: list[str], name: str, occurrence: int) -> int:
    """The 1-based number of the `occurrence`th stage called `name`."""
    numbers = [i for i, stage in enumerate(stages, 1) if stage == name]
    return numbers[occurrence - 1]


def test_killed_at_the_write_stages_that_matter_resumes_or_is_refused(whole, tmp_path):
    whole_run, stages = whole
    assert {"model staged", "checkpoint moved aside", "checkpoint swapped in", "model swapped in"} <= set(stages)
    outcomes = []
    for name, occurrence in QUICK_POINTS:
        number = nth(stages, name, occurrence)
        outcomes.append(kill_and_check(whole_run, number, name, tmp_path / f"run-{number}"))
    assert outcomes == ["refused", "resumed", "resumed", "resumed"]
    # the checkpoint's files have the run's usual mode, not safetensors' 0600
    mode = 0o666 & ~io._umask()
    assert {os.stat(p).st_mode & 0o777 for p in (whole_run / "checkpoint").iterdir()} == {mode}


@pytest.mark.slow
def test_killed_at_every_write_stage_resumes_or_is_refused(whole, tmp_path):
    whole_run, stages = whole
    outcomes = {
        number: kill_and_check(whole_run, number, stage, tmp_path / f"run-{number}")
        for number, stage in enumerate(stages, 1)
    }
    assert "resumed" in outcomes.values() and "refused" in outcomes.values()
