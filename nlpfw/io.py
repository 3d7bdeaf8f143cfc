"""The one way nlpfw writes a file.

A regular file is written to a temporary file in the same folder, flushed to disk (fsync) and
renamed over the target, so a reader sees the old file or the new one, never half of one. A
symlink is followed: its target is replaced and the link stays. A device, a named pipe or
`-` (standard output) cannot be replaced by a rename; they are written through.

Temporary files are named `.NAME.PID.nlpfw-tmp`; one left behind by a killed process is
removed by the next write into its folder (and by the next run that claims a run folder).
Every failure (a full disk, a read-only file system, a folder in the way) is a `WriteError`
naming the file and the cause, never a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nlpfw.errors import NlpfwError

TMP_SUFFIX = ".nlpfw-tmp"
KILL_AT = "NLPFW_TEST_KILL_AT"  # test-only: SIGKILL this process at the Nth write stage
STAGE_LOG = "NLPFW_TEST_STAGE_LOG"  # test-only: append each write stage's name to this file

_stages = 0


class WriteError(NlpfwError):
    """A file or folder could not be written; the message names it and says why (`cause`)."""

    def __init__(self, message: str, cause: str | None = None):
        super().__init__(message)
        self.cause = cause


def fault_point(stage: str) -> None:
    """A moment in a write where a crash must leave nothing half-written. Tests stop the
    process exactly here: `NLPFW_TEST_KILL_AT=N` SIGKILLs it at the Nth stage it reaches."""
    global _stages
    log, kill_at = os.environ.get(STAGE_LOG), os.environ.get(KILL_AT)
    if log is None and kill_at is None:
        return
    _stages += 1
    if log:
        with open(log, "a", encoding="utf-8") as stream:
            stream.write(f"{_stages}\t{stage}\n")
    if kill_at and _stages == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


def reason(error: BaseException, where: Path | None = None) -> str:
    """Why a write failed, in words; libraries that hide the errno (torch's `iostream error`,
    safetensors' `os error 28`) are read through the free space left."""
    code = getattr(error, "errno", None)
    text = str(error)
    if code is None and "os error " in text:
        try:
            code = int(text.split("os error ")[1].split(")")[0])
        except ValueError:
            code = None
    if code is None and where is not None and _disk_full(where):
        code = errno.ENOSPC
    words = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file too large for this file system or the file-size limit",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "it is a folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.ENOENT: "the folder does not exist",
    }
    if code in words:
        return words[code]
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _disk_full(where: Path) -> bool:
    for folder in (where, *where.parents):
        if folder.is_dir():
            try:
                info = os.statvfs(folder)
            except OSError:
                return False
            return info.f_bavail == 0
    return False


def _is_stream(path: Path) -> bool:
    """A target that a rename would destroy: a device, a pipe, a socket (after symlinks)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def target_of(path: Path) -> Path:
    """The file a write to `path` lands in: symlinks followed (a dangling one to its target)."""
    path = Path(path)
    if path.is_symlink():
        return Path(os.path.realpath(path))
    return path


def clean_temporaries(folder: Path) -> None:
    """Remove temporary files that dead processes left in `folder`."""
    try:
        leftovers = list(folder.glob(f".*{TMP_SUFFIX}"))
    except OSError:
        return
    for leftover in leftovers:
        pid = leftover.name[: -len(TMP_SUFFIX)].rsplit(".", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary(path: Path) -> Path:
    """The temporary name for writing `path` in this process."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def check_writable(path: Path, option: str = "--output") -> None:
    """Raise `WriteError` now, before any work, if `path` could not be written later."""
    if str(path) == "-":
        return
    target = target_of(Path(path))
    if target.is_dir():
        raise WriteError(f"{option}: cannot write {path}: it is a folder; give a file name")
    if _is_stream(target):
        return
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise WriteError(f"{option}: cannot write {path}: {folder} is a file, not a folder")
    probe = folder / f".probe.{os.getpid()}{TMP_SUFFIX}"
    try:
        probe.write_bytes(b"")
    except OSError as error:
        raise WriteError(f"{option}: cannot write {path}: {reason(error, folder)}") from None
    probe.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, flush it to disk and rename it over
    `path`; a device or pipe is written through (`write(path)`)."""
    path = Path(path)
    target = target_of(path)
    if _is_stream(target):
        try:
            write(target)
        except (OSError, RuntimeError, ValueError) as error:
            raise WriteError(f"cannot write {path}: {reason(error)}") from None
        return
    tmp = temporary(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_temporaries(target.parent)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(target))
        write(tmp)
        fault_point(f"written {target.name}")
        with open(tmp, "rb") as stream:
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # the usual mode, whatever the library made
        os.replace(tmp, target)
        fault_point(f"renamed {target.name}")
        sync_folder(target.parent)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, (OSError, RuntimeError)) or type(error).__name__ == "SafetensorError":
            cause = reason(error, target.parent)
            raise WriteError(f"cannot write {path}: {cause}", cause) from None
        raise


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk; best effort where the platform cannot."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Write `text` as UTF-8; `-` is standard output. A text that cannot be UTF-8 (a lone
    surrogate) is a `WriteError` before anything is written."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as error:
        line = text.count("\n", 0, error.start) + 1
        raise WriteError(
            f"cannot write {path}: line {line} holds {text[error.start:error.end]!r}, a lone surrogate "
            "that UTF-8 cannot hold (the input had an unpaired \\ud800-\\udfff escape)"
        ) from None
    if str(path) == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data) if hasattr(sys.stdout, "buffer") else sys.stdout.write(text)
        sys.stdout.flush()
        return
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
