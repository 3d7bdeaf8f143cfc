"""A run folder belongs to one run at a time, and holds the parts of one run only.

`claim` takes the folder for a run: it locks it (`.nlpfw.lock`, holding the owner's pid, host
and start time; a lock whose process is gone is stale and taken over), refuses a folder
another run holds or that is not a run folder, empties it whole under `--overwrite` (the old
checkpoint first, so a half-emptied folder can never be resumed), and finishes or undoes
whatever a killed process left half done: a checkpoint or model swap, temporary files.

The model folder is swapped whole, like the checkpoint: at an epoch end the new best model is
written to `.model.next-E<epoch>/`; the checkpoint that records that epoch as best is written
next; only then does the staged folder replace `model/`. A crash at any moment leaves
`model/` the previous complete model or the new one, and the checkpoint and `model/` agree
once `claim` (on `--resume`) has finished the swap.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from nlpfw import io
from nlpfw.errors import RunDirError

LOCK = ".nlpfw.lock"
LOCK_HELD = "NLPFW_RUN_LOCK"  # set for the processes a locked run starts (torchrun ranks)
MODEL = "model"
# What makes a folder a run folder (any one of them).
RUN_FILES = ("recipe.toml", "plugins.json", "metrics.jsonl", "report.json", "checkpoint", "model")
_STAGED = re.compile(r"^\.model\.next-E(\d+)$")


def _start_time(pid: int) -> str | None:
    """The process's start time (Linux), so a reused pid is not mistaken for the owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _identity(folder: Path) -> list[int]:
    """The folder itself (device and inode), so a lock copied with its folder is not its owner's."""
    info = folder.stat()
    return [info.st_dev, info.st_ino]


def _owner(folder: Path) -> dict[str, object]:
    return {
        "folder": _identity(folder),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": _start_time(os.getpid()),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _stale(owner: dict[str, object], folder: Path) -> bool:
    """Whether the process that wrote a lock on this host is gone, or the lock was copied
    with its folder (a backup of a live run) and so locks nothing here."""
    if "folder" in owner and owner["folder"] != _identity(folder):
        return True
    if owner.get("host") != socket.gethostname():
        return False  # another machine's process: cannot tell, so it is live
    pid = owner.get("pid")
    if not isinstance(pid, int) or not io.pid_alive(pid):
        return True
    started = owner.get("start")
    return started is not None and _start_time(pid) not in (None, started)


class Lock:
    """The lock on one run folder, released on `release()` or at exit."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / LOCK
        self.held = False
        self.created = False  # the folder was made for this run: removed again if left empty

    def acquire(self) -> Lock:
        if os.environ.get(LOCK_HELD) == str(self.path.absolute()):
            return self  # the parent process (nlpfw run --nproc) holds it for this run
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            tmp = io.temporary(self.path)
            tmp.write_text(json.dumps(_owner(self.folder)) + "\n", encoding="utf-8")
            try:
                os.link(tmp, self.path)  # atomic, and fails if a lock exists: never a half lock
            except FileExistsError:
                owner = self._read()
                if owner is not None and not _stale(owner, self.folder):
                    raise RunDirError(
                        f"run folder {self.folder} is in use by another run (pid {owner.get('pid')} on "
                        f"{owner.get('host')}, since {owner.get('since')}); wait for it to end, or choose "
                        f"another folder. If that process is gone, delete {self.path}"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            finally:
                tmp.unlink(missing_ok=True)
            self.held = True
            os.environ[LOCK_HELD] = str(self.path.absolute())
            atexit.register(self.release)
            return self
        raise RunDirError(f"run folder {self.folder}: could not take its lock {self.path}")

    def _read(self) -> dict[str, object] | None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def release(self) -> None:
        if self.held:
            owner = self._read()
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
            if self.created:  # a run that failed before writing anything leaves no folder
                with contextlib.suppress(OSError):
                    self.folder.rmdir()
            if os.environ.get(LOCK_HELD) == str(self.path.absolute()):
                del os.environ[LOCK_HELD]


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def claim(folder: Path, overwrite: bool = False, resume: bool = False) -> Lock:
    """Lock `folder` for a run; see the module docstring. Raises `RunDirError` if it cannot."""
    if folder.exists() and not folder.is_dir():
        raise RunDirError(f"output folder {folder} is a file")
    try:
        lock = Lock(folder).acquire()
    except OSError as error:
        raise RunDirError(f"cannot create the run folder {folder}: {io.reason(error, folder)}") from None
    try:
        if resume:
            recover(folder)
            return lock
        entries = [p for p in folder.iterdir() if p.name != LOCK and not _leftover(p)]
        if entries and not holds_run(folder):
            shown = ", ".join(sorted(p.name for p in entries)[:5]) + (", ..." if len(entries) > 5 else "")
            raise RunDirError(f"output folder {folder} is not empty and holds no run ({shown}); nlpfw writes "
                              "a run only into a new or empty folder, or replaces a run with --overwrite")  # fmt: skip
        if entries and not overwrite:
            raise RunDirError(f"output folder {folder} already holds a run; choose another with --output, "
                              "or pass --overwrite to replace it")  # fmt: skip
        empty(folder)
    except BaseException:
        lock.release()
        raise
    return lock


def _leftover(path: Path) -> bool:
    return path.name.endswith(io.TMP_SUFFIX) or path.name.startswith((".checkpoint.", ".model."))


def empty(folder: Path) -> None:
    """Remove everything of an old run but the lock; the checkpoint first, so that a folder
    emptied halfway can never be resumed as the old run."""
    entries = [p for p in folder.iterdir() if p.name != LOCK]
    entries.sort(key=lambda p: (not p.name.lstrip(".").startswith("checkpoint"), p.name))
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    io.sync_folder(folder)


def stage_model(run_dir: Path, epoch: int, write: Callable[[Path], None]) -> Path:
    """Write a complete model folder for `epoch` beside `model/`; `commit_model` swaps it in."""
    staged = run_dir / f".model.next-E{epoch}"
    partial = run_dir / f".model.{os.getpid()}{io.TMP_SUFFIX}"
    shutil.rmtree(partial, ignore_errors=True)
    for old in run_dir.glob(".model.next-E*"):
        shutil.rmtree(old, ignore_errors=True)
    try:
        write(partial)
        io.fault_point("model staged")
        partial.rename(staged)
    except BaseException as error:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(error, io.WriteError) or (isinstance(error, (OSError, RuntimeError))):
            cause = getattr(error, "cause", None) or io.reason(error, run_dir)
            raise io.WriteError(f"cannot write the model {run_dir / MODEL}: {cause}", cause) from None
        raise
    io.sync_folder(run_dir)
    return staged


def commit_model(run_dir: Path, best_epoch: int | None) -> None:
    """Swap the staged model of `best_epoch` in as `model/`; drop a staged model of another."""
    for staged in run_dir.glob(".model.next-E*"):
        match = _STAGED.match(staged.name)
        if match is None or best_epoch is None or int(match.group(1)) != best_epoch:
            shutil.rmtree(staged, ignore_errors=True)
            continue
        target, old = run_dir / MODEL, run_dir / f".model.old{io.TMP_SUFFIX}"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
            io.fault_point("model moved aside")
        staged.rename(target)
        io.fault_point("model swapped in")
        io.sync_folder(run_dir)
        shutil.rmtree(old, ignore_errors=True)


def recover(run_dir: Path) -> None:
    """Finish or undo what a killed run left half done, so the checkpoint and `model/` agree,
    and remove its temporary files (under the lock, no live process owns them)."""
    from nlpfw import checkpoint

    for partial in run_dir.glob(f".{checkpoint.FOLDER}.tmp-*"):
        shutil.rmtree(partial, ignore_errors=True)
    if not (run_dir / checkpoint.FOLDER / "state.pt").is_file():
        previous = sorted(run_dir.glob(f".{checkpoint.FOLDER}.old-*"), key=lambda p: p.stat().st_mtime)
        if previous:  # killed between the checkpoint's two renames: the previous one is whole
            shutil.rmtree(run_dir / checkpoint.FOLDER, ignore_errors=True)
            previous[-1].rename(run_dir / checkpoint.FOLDER)
    for old in run_dir.glob(f".{checkpoint.FOLDER}.old-*"):
        shutil.rmtree(old, ignore_errors=True)
    old_model = run_dir / f".model.old{io.TMP_SUFFIX}"
    if old_model.exists() and not (run_dir / MODEL).exists():
        old_model.rename(run_dir / MODEL)  # killed between the model's two renames
    commit_model(run_dir, checkpoint.best_epoch(run_dir))
    shutil.rmtree(old_model, ignore_errors=True)
    for leftover in run_dir.glob(f".model.*{io.TMP_SUFFIX}"):
        shutil.rmtree(leftover, ignore_errors=True)
    io.clean_temporaries(run_dir)
    io.clean_temporaries(run_dir / MODEL)
