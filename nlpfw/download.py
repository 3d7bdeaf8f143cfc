"""Downloads of public data files, checked against their sha256 before anything is kept.

`fetch` streams a URL (or copies a local file) into a temporary file beside the target, with a
progress bar on stderr, hashing as it goes; only a file whose sha256 matches is renamed into
place, so an interrupted, truncated or corrupted download leaves nothing behind. `hub://REPO/FILE`
sources are files of a Hugging Face Hub repository, fetched from its `resolve` URL as
huggingface_hub builds it (which honours `HF_ENDPOINT`, a mirror, and sends `HF_TOKEN`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from nlpfw import io
from nlpfw.errors import DataError

HUB_PREFIX = "hub://"
CHUNK = 1 << 16
_USER_AGENT = "nlpfw"


def hub_url(source: str) -> tuple[str, dict[str, str]]:
    """`hub://google-bert/bert-base-chinese/vocab.txt[@REVISION]` -> its resolve URL on the
    Hub (`$HF_ENDPOINT/{repo}/resolve/{revision}/{file}`) and the request headers."""
    spec, _, revision = source[len(HUB_PREFIX) :].partition("@")
    parts = spec.strip("/").split("/")
    if len(parts) < 3:
        raise DataError(f"{source}: expected hub://OWNER/REPO/FILE[@REVISION]")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers
    except ImportError:  # transformers brings huggingface_hub; without it, the public layout
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        return f"{endpoint}/{repo}/resolve/{revision or 'main'}/{filename}", {"User-Agent": _USER_AGENT}
    headers = build_hf_headers(library_name=_USER_AGENT)
    return hf_hub_url(repo, filename, revision=revision or None), dict(headers)


def describe(source: str) -> str:
    """The source as a user reads it: a hub source with the URL it stands for."""
    return f"{source} ({hub_url(source)[0]})" if source.startswith(HUB_PREFIX) else source


def fetch(source: str, target: Path, sha256: str | None, what: str, timeout: float = 60) -> Path:
    """Put the file `source` (an http(s) URL, `hub://...`, a `file://` URL or a local path) at
    `target` if its sha256 is `sha256` (None or "": not checked); raise `DataError` naming `what`
    (the recipe key) otherwise, leaving no file. Returns `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = io.temporary(target)
    try:
        with _open(source, what, timeout) as (stream, size):
            digest = _copy(stream, partial, size, f"{what}: {_file_name(source) or target.name}")
    except OSError as error:  # the connection broke, or the disk is full: nothing is kept
        partial.unlink(missing_ok=True)
        raise DataError(f"{what}: the download of {describe(source)} into {target} failed: "
                        f"{getattr(error, 'strerror', None) or error}; try again") from None  # fmt: skip
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if sha256 and digest != sha256.lower():
        partial.unlink(missing_ok=True)
        raise DataError(
            f"{what}: {describe(source)} fails its sha256 check (expected {sha256}, got {digest}); the download "
            f"was corrupted or the file changed, and nothing was kept. Try again, or fetch the file yourself "
            f"and put it at {target}"
        )
    os.replace(partial, target)
    return target


def _file_name(source: str) -> str:
    """The last part of a URL's path or of a path: what the progress bar calls the file."""
    return urllib.parse.urlsplit(source.split("@")[0] if source.startswith(HUB_PREFIX) else source).path.rsplit("/", 1)[-1]


class _open:  # noqa: N801 (a context manager read as a verb)
    """The source as a binary stream and its size in bytes (None if unknown)."""

    def __init__(self, source: str, what: str, timeout: float):
        self.source, self.what, self.timeout = source, what, timeout
        self.stream: BinaryIO | None = None

    def __enter__(self) -> tuple[BinaryIO, int | None]:
        source, headers = self.source, {"User-Agent": _USER_AGENT}
        if source.startswith(HUB_PREFIX):
            source, headers = hub_url(source)
        if source.startswith(("http://", "https://")):
            try:
                response = urllib.request.urlopen(urllib.request.Request(source, headers=headers), timeout=self.timeout)
            except urllib.error.HTTPError as error:
                raise DataError(f"{self.what}: cannot fetch {describe(self.source)}: HTTP {error.code} {error.reason}") from None
            except (OSError, ValueError) as error:
                reason = getattr(error, "reason", error)
                raise DataError(f"{self.what}: cannot fetch {describe(self.source)}: {reason}") from None
            self.stream = response
            length = response.headers.get("Content-Length")
            return response, int(length) if length and length.isdigit() else None
        path = Path(source.removeprefix("file://")).expanduser()
        try:
            self.stream = path.open("rb")
        except OSError as error:
            raise DataError(f"{self.what}: cannot fetch {path}: {error.strerror or error}") from None
        return self.stream, path.stat().st_size

    def __exit__(self, *exc: object) -> None:
        if self.stream is not None:
            self.stream.close()


def _copy(stream: BinaryIO, partial: Path, size: int | None, label: str) -> str:
    """Copy `stream` into `partial` with a progress bar; return the sha256 of what was read."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    digest = hashlib.sha256()
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress, partial.open("wb") as out:
        bar = progress.add_task(f"downloading {label}", total=size)
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            progress.advance(bar, len(chunk))
        out.flush()
        os.fsync(out.fileno())
    if size is not None and partial.stat().st_size != size:
        raise DataError(f"{label}: the download stopped after {partial.stat().st_size:,} of {size:,} bytes; try again")
    return digest.hexdigest()


def copy_tree_atomically(files: dict[str, bytes], folder: Path) -> None:
    """Write `files` (name: content) as the new folder `folder`, whole or not at all: into a
    temporary sibling first, renamed into place once every file is written."""
    staging = io.temporary(folder)
    try:
        staging.mkdir(parents=True)
        for name, data in files.items():
            (staging / name).write_bytes(data)
        try:
            os.replace(staging, folder)
        except OSError:
            if not all((folder / name).is_file() for name in files):
                raise
            shutil.rmtree(staging)  # another process (a rank of the same run) put it there first
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
