"""Data-parallel training on CPU (gloo, 2 processes on this machine): the same weights and dev
metrics as one process with the same global batch; a killed rank stops the run cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from test_training import ROOT, TINY, run_ok

from nlpfw import checkpoint

RECIPE = ROOT / "recipes" / "quickstart.toml"
# no dropout and no bf16, so one process and two can be compared to float tolerance;
# 160 texts in global batches of 16 (8 a rank), 2 epochs, a checkpoint every 2 steps
EXACT = [
    *TINY, "trainer.epochs=2", "trainer.amp=false", "trainer.checkpoint_every=2", "encoder.dropout=0.0",
    "encoder.hidden_dropout=0.0", "encoder.attention_dropout=0.0", "decoder.dropout=0.0",
]  # fmt: skip


def nlpfw_run(output: Path, *extra: str, settings: list[str] = EXACT) -> list[str]:
    args = [sys.executable, "-m", "nlpfw", "run", str(RECIPE), "-o", str(output)]
    for item in settings:
        args += ["--set", item]
    return args + list(extra)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


def metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_root):
    output = tmp_path_factory.mktemp("single") / "run"
    run_ok(nlpfw_run(output))
    return output


def test_two_processes_match_one_with_the_same_global_batch(single, tmp_path):
    output = tmp_path / "run"
    result = run_ok(nlpfw_run(output, "--nproc", "2"))
    assert "Launching 2 processes: torchrun --standalone --nproc-per-node 2 -m nlpfw run" in result.stdout
    assert result.stdout.count("Done: best dev F1") == 1  # only rank 0 prints
    ours, theirs = weights(output / "checkpoint" / "model.safetensors"), weights(single / "checkpoint" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-5, msg=name)
    for a, b in zip(metrics(output), metrics(single), strict=True):
        assert a["scores"] == b["scores"]  # exactly: evaluation is sharded and gathered
        assert a["step"] == b["step"] == 10 * a["epoch"]
        assert a["dev_loss"] == pytest.approx(b["dev_loss"], rel=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    env = json.loads((output / "plugins.json").read_text(encoding="utf-8"))["environment"]
    assert env["processes"] == 2 and env["device_name"].startswith("2 x CPU")
    assert sorted(p.name for p in output.iterdir()) == sorted(p.name for p in single.iterdir())
    assert not list(output.glob(".*tmp*"))


def rank_process(rank: int, output: Path) -> int | None:
    """The pid of the torchrun worker with RANK=`rank` training into `output`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"LOCAL_RANK=" + str(rank).encode() in environ and str(output).encode() in cmdline:
            return int(entry.name)
    return None


def test_a_killed_rank_stops_the_run_cleanly_and_the_checkpoint_resumes(single, tmp_path):
    output = tmp_path / "run"
    launcher = subprocess.Popen(nlpfw_run(output, "--nproc", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    meta = output / "checkpoint" / "meta.json"
    while not meta.exists():  # the first checkpoint: step 2 of epoch 1
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.01)
    victim = rank_process(1, output)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 1, out + err
    flat = " ".join(err.split())
    assert "Error: a training process failed (torchrun exit code 1; its error is above) and torchrun stopped the others;" in flat
    assert f"the last checkpoint, {output / 'checkpoint'}, is intact." in flat
    assert f"Once the cause is fixed: nlpfw run {RECIPE} --resume {output} --nproc 2" in flat
    assert "ChildFailedError" not in err and "The first to fail: rank " in flat  # torchrun's report held back
    assert rank_process(0, output) is None  # no rank left behind
    saved = checkpoint.load(output)  # intact: it loads, whole
    assert saved.position.step >= 2

    # resumed in one process (another world size): the same plan, so the single run's weights
    run_ok([sys.executable, "-m", "nlpfw", "run", str(RECIPE), "--resume", str(output)])
    ours, theirs = weights(output / "checkpoint" / "model.safetensors"), weights(single / "checkpoint" / "model.safetensors")
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-5, msg=name)
    assert [m["scores"] for m in metrics(output)] == [m["scores"] for m in metrics(single)]


def test_a_rank_error_with_nproc_is_one_line_not_torchruns_report(tmp_path, data_root):
    output = tmp_path / "run"
    result = subprocess.run(nlpfw_run(output, "--nproc", "2", settings=[*TINY, f"dataset.path={tmp_path / 'nope'}"]),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"Error: dataset.path: folder not found: {tmp_path / 'nope'}"
    assert len(lines) == 2, result.stderr
    again = " ".join(f"--set {item}" for item in [*TINY, f"dataset.path={tmp_path / 'nope'}"])
    assert lines[1] == (
        "Error: a training process failed (torchrun exit code 1; its error is above) and torchrun stopped the "
        f"others; no checkpoint had been written yet. Once the cause is fixed: nlpfw run {RECIPE} {again} -o {output} "
        "--overwrite --nproc 2. The first to fail: rank 0 (exit code 1)"
    )


SUMMARY = """E1202 04:45:00.000000 123 torch/distributed/elastic/multiprocessing/api.py:900] failed (exitcode: 1)
Traceback (most recent call last):
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
nlpfw FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-02_04:45:00
  host      : localhost
  rank      : {other} (local_rank: {other})
  exitcode  : {other_code} (pid: 11)
  error_file: <N/A>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-02_04:45:00
  host      : localhost
  rank      : {root} (local_rank: {root})
  exitcode  : {root_code} (pid: 12)
  error_file: <N/A>
============================================================
"""


TRACE = "[rank1]: Traceback (most recent call last):\n[rank1]: boom\n"


@pytest.mark.parametrize(
    ("root_code", "other_code", "echo", "named", "shown"),
    [(1, 1, True, "rank 0 (exit code 1)", ""), (1, -15, True, "rank 0", ""),
     (-9, -15, False, "rank 1 (killed by SIGKILL)", TRACE), (1, 1, False, "rank 1 (exit code 1)", TRACE)],
)  # fmt: skip
def test_the_report_names_the_rank_behind_a_closed_connection(capsys, root_code, other_code, echo, named, shown):
    """torchrun names whichever rank exits first; a rank that only lost its connection to the
    failing one (an echo) can win that race, and then the report looks past it."""
    from nlpfw.distributed import TorchrunReport

    report = TorchrunReport()
    report.feed("Error: dataset.path: folder not found: /nope\n")  # rank 0's own error, as printed
    report.feed("[rank1]: Traceback (most recent call last):\n")
    report.feed("[rank1]: RuntimeError: [pair.cc:553] Connection closed by peer [127.0.0.1]:1456.\n" if echo else "[rank1]: boom\n")
    for line in SUMMARY.format(root=1, root_code=root_code, other=0, other_code=other_code).splitlines(keepends=True):
        report.feed(line)
    report.show_root_cause()
    assert report.first_failure() == named
    err = capsys.readouterr().err
    assert err.startswith("Error: dataset.path: folder not found: /nope\n")
    assert err.removeprefix("Error: dataset.path: folder not found: /nope\n") == shown
