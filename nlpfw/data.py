"""Where data lives: relative data paths in recipes are resolved under the data root."""

from __future__ import annotations

import os
from pathlib import Path

from nlpfw.errors import DataError

DATA_ROOT_ENV = "NLPFW_DATA_ROOT"


def data_root() -> Path:
    """`$NLPFW_DATA_ROOT`; when it is unset, `./data` if that folder exists, else
    `$XDG_CACHE_HOME/nlpfw/data` (`~/.cache/nlpfw/data`), where downloads go by default."""
    value = os.environ.get(DATA_ROOT_ENV)
    if value:
        return Path(value).expanduser()
    if Path("data").is_dir():
        return Path("data")
    return default_download_root()


def default_download_root() -> Path:
    """`$XDG_CACHE_HOME/nlpfw/data`, `~/.cache/nlpfw/data` by default."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "nlpfw" / "data"


def under_root(path: str | Path, root: Path) -> Path:
    """An absolute `path` as is; a relative one under `root`."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else root / candidate


def resolve(path: str | Path, root: Path, key: str, *, directory: bool = False) -> Path:
    """`under_root(path, root)` made absolute, or `DataError` naming `key` if it does not exist.

    Absolute, so that a path built from it is never rooted a second time under a relative root."""
    candidate = under_root(path, root)
    exists = candidate.is_dir() if directory else candidate.is_file()
    if not exists:
        what = "folder" if directory else "file"
        hint = "" if Path(path).is_absolute() else f" (relative paths are read under the data root; set {DATA_ROOT_ENV})"
        raise DataError(f"{key}: {what} not found: {candidate}{hint}")
    return candidate.absolute()
