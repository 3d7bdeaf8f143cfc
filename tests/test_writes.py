"""The one file writer (nlpfw.io): devices, pipes, links and `-` written through; outputs
checked before the work; full disks and read-only file systems named, with nothing left behind."""

from __future__ import annotations

import contextlib
import os
import resource
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_training import ROOT, TINY

from nlpfw import io
from nlpfw.cli import cli

QUICKSTART = ROOT / "recipes" / "quickstart.toml"


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@contextlib.contextmanager
def mounted(folder: Path, options: str) -> Iterator[bool]:
    """A tmpfs at `folder` (yields True), where this machine lets the tests mount one."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield False
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_output_onto_a_device_a_pipe_a_link_or_dash_is_written_through(tmp_path, capfd):
    # a device: the write fails as the device says, and the device stays a device
    with pytest.raises(io.WriteError, match=r"^cannot write /dev/full: no space left on device$"):
        io.write_text(Path("/dev/full"), "x\n")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    # a named pipe: a reader gets the text, and the pipe stays a pipe
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    io.write_text(fifo, "张三\n")
    reader.join(timeout=10)
    assert received == ["张三\n".encode()] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    # a symlink: its target is replaced, the link stays a link
    (tmp_path / "real.jsonl").write_text("old\n", encoding="utf-8")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "real.jsonl")
    io.write_text(tmp_path / "link.jsonl", "new\n")
    assert (tmp_path / "link.jsonl").is_symlink() and (tmp_path / "real.jsonl").read_text(encoding="utf-8") == "new\n"
    # `-`: standard output
    io.write_text(Path("-"), "to stdout\n")
    assert capfd.readouterr().out == "to stdout\n"
    assert not (tmp_path / "-").exists() and not Path("-").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "pipe", "real.jsonl"]


def test_regular_files_are_replaced_whole_and_keep_the_usual_mode(tmp_path):
    target = tmp_path / "out.json"
    io.write_json(target, {"a": 1})
    assert target.read_text(encoding="utf-8") == '{\n  "a": 1\n}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~io._umask()


def test_temporary_files_of_dead_processes_are_cleaned_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".out.jsonl.{dead.stdout.strip()}{io.TMP_SUFFIX}"
    leftover.write_bytes(b"half")
    live = tmp_path / f".other.jsonl.{os.getppid()}{io.TMP_SUFFIX}"  # a live process's: kept
    live.write_bytes(b"in progress")
    io.write_text(tmp_path / "new.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "new.txt"]


def test_a_text_utf8_cannot_hold_is_named_before_anything_is_written(tmp_path):
    with pytest.raises(io.WriteError, match=r"line 2 holds '\\ud800', a lone surrogate that UTF-8 cannot hold"):
        io.write_text(tmp_path / "out.jsonl", "ok\nab\ud800cd\n")
    assert list(tmp_path.iterdir()) == []


def test_outputs_that_cannot_be_written_are_refused_before_the_work(tmp_path):
    folder = tmp_path / "existing"
    folder.mkdir()
    # the model folder is not even looked at: the output is checked first
    for args in (
        ["predict", tmp_path / "no-run", "张三", "--output", folder],
        ["evaluate", tmp_path / "no-run", "--output", folder],
    ):
        result = invoke(*args)
        assert result.exit_code == 1, result.output
        assert result.output == f"Error: --output: cannot write {folder}: it is a folder; give a file name\n"
    result = invoke("export", tmp_path / "no-run", "--onnx", folder)
    assert result.exit_code == 1
    assert result.output == f"Error: --onnx: cannot write {folder}: it is a folder; give a file name\n"
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    result = invoke("predict", tmp_path / "no-run", "张三", "--output", blocker / "out.jsonl")
    assert result.exit_code == 1
    assert result.output == f"Error: --output: cannot write {blocker / 'out.jsonl'}: {blocker} is a file, not a folder\n"


def test_a_read_only_file_system_is_named_before_the_work(tmp_path):
    with mounted(tmp_path / "ro", "ro,size=1m") as ok:
        if not ok:
            pytest.skip("cannot mount a read-only tmpfs here (not root, or no mount permission)")
        result = invoke("predict", tmp_path / "no-run", "张三", "--output", tmp_path / "ro" / "out.jsonl")
        assert result.exit_code == 1
        assert result.output == f"Error: --output: cannot write {tmp_path / 'ro' / 'out.jsonl'}: read-only file system\n"
        result = invoke("run", QUICKSTART, "-o", tmp_path / "ro" / "run")
        assert result.exit_code == 1
        assert result.output == f"Error: cannot create the run folder {tmp_path / 'ro' / 'run'}: read-only file system\n"


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders anywhere under `folder`."""
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*")
        if p.name.endswith(io.TMP_SUFFIX) or ".tmp-" in p.name or p.name.startswith((".checkpoint.", ".model."))
    )  # fmt: skip


def test_a_full_disk_gives_one_message_and_leaves_no_temporary_files(tmp_path, data_root):
    """On a 4 MiB tmpfs (or, where mounting is not allowed, under a 4 MiB file-size limit)."""
    disk = tmp_path / "small"
    args = [sys.executable, "-m", "nlpfw", "run", str(QUICKSTART), "-o", str(disk / "run")]
    for item in [*TINY, "trainer.epochs=1"]:
        args += ["--set", item]
    env = {**os.environ, "NLPFW_CACHE_DIR": "off"}
    with mounted(disk, "size=4m") as ok:
        limit = None
        if not ok:
            def limit():
                resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
        result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, preexec_fn=limit)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.stderr
        assert errors[0].startswith("Error: cannot write the "), errors[0]
        if ok:  # under a file-size limit some libraries hide the cause (torch: "iostream error")
            assert ": no space left on device; the run stopped and left no temporary files." in errors[0]
        assert leftovers(disk) == [], errors[0]
        assert not (disk / "run" / ".nlpfw.lock").exists()
