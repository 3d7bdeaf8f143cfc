"""The quickstart on a fresh machine: CLUENER's release and the bert-base-chinese vocabulary
are downloaded into an empty data root, checked against their sha256, and the run trains.
The files are served from 127.0.0.1 (copies of the real ones), the vocabulary through the
Hub's URL layout with HF_ENDPOINT pointing at the local server."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nlpfw.download import fetch, hub_url
from nlpfw.errors import DataError
from nlpfw_plugins.bert import VOCAB_SHA256, VOCAB_URL
from nlpfw_plugins.cluener import SHA256, download

ROOT = Path(__file__).resolve().parent.parent
HUB_PATH = "google-bert/bert-base-chinese/resolve/main/vocab.txt"  # what hub://google-bert/bert-base-chinese/vocab.txt asks for


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.requests.append(self.path)
        super().do_GET()


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving `folder` in a thread: (its URL, the paths requested)."""
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, data_root) -> Path:
    """The public files as their hosts lay them out: the CLUENER release zip and the Hub's
    resolve path of the vocabulary; plus corrupted copies of both."""
    folder = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(folder / "cluener_public.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for name in SHA256:
            archive.write(data_root / "cluener" / name, f"cluener_public/{name}")
    vocab = (data_root / "bert-base-chinese-vocab" / "vocab.txt").read_bytes()
    (folder / HUB_PATH).parent.mkdir(parents=True)
    (folder / HUB_PATH).write_bytes(vocab)
    (folder / "bad" / HUB_PATH).parent.mkdir(parents=True)
    (folder / "bad" / HUB_PATH).write_bytes(vocab.replace("[UNK]".encode(), "[UNX]".encode(), 1))
    with zipfile.ZipFile(folder / "bad" / "cluener_public.zip", "w") as archive:
        for name in SHA256:
            text = (data_root / "cluener" / name).read_bytes()
            archive.writestr(f"cluener_public/{name}", text[:-2] if name == "dev.json" else text)
    return folder


def test_the_real_vocabulary_has_the_pinned_digest(data_root) -> None:
    vocab = data_root / "bert-base-chinese-vocab" / "vocab.txt"
    assert hashlib.sha256(vocab.read_bytes()).hexdigest() == VOCAB_SHA256
    assert VOCAB_SHA256.startswith("45bbac6b") and VOCAB_SHA256.endswith("c27b291c")


def test_hub_sources_follow_hf_endpoint() -> None:
    """huggingface_hub reads HF_ENDPOINT when it is imported: a fresh process."""
    code = ("from nlpfw.download import hub_url; import json; "
            "print(json.dumps([hub_url('hub://google-bert/bert-base-chinese/vocab.txt'), hub_url('hub://o/r/sub/f.txt@v1.0')[0]]))")  # fmt: skip
    env = {**os.environ, "HF_ENDPOINT": "http://mirror.example:8080"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    (url, headers), other = json.loads(result.stdout)
    assert url == f"http://mirror.example:8080/{HUB_PATH}"
    assert "nlpfw" in headers["user-agent"]
    assert other == "http://mirror.example:8080/o/r/resolve/v1.0/sub/f.txt"
    assert VOCAB_URL == "hub://google-bert/bert-base-chinese/vocab.txt"
    with pytest.raises(DataError, match=r"expected hub://OWNER/REPO/FILE"):
        hub_url("hub://just-a-name")


def test_fetch_checks_the_digest_and_keeps_nothing_bad(site, tmp_path) -> None:
    target = tmp_path / "root" / "vocab" / "vocab.txt"
    with serve(site) as (url, requests):
        fetch(f"{url}/bad/{HUB_PATH}", target, None, "encoder.vocab_url")  # unchecked: kept
        assert target.read_bytes() == (site / "bad" / HUB_PATH).read_bytes()
        target.unlink()
        with pytest.raises(DataError) as error:
            fetch(f"{url}/bad/{HUB_PATH}", target, VOCAB_SHA256, "encoder.vocab_url")
        assert "encoder.vocab_url" in str(error.value) and "fails its sha256 check" in str(error.value)
        assert f"expected {VOCAB_SHA256}" in str(error.value) and "nothing was kept" in str(error.value)
        assert sorted(os.listdir(target.parent)) == []  # no file, no temporary
        with pytest.raises(DataError, match=r"HTTP 404"):
            fetch(f"{url}/missing.txt", target, VOCAB_SHA256, "encoder.vocab_url")
        assert sorted(os.listdir(target.parent)) == []
        fetch(f"{url}/{HUB_PATH}", target, VOCAB_SHA256, "encoder.vocab_url")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == VOCAB_SHA256
    assert requests[-1] == f"/{HUB_PATH}"
    local = tmp_path / "local.txt"
    fetch(str(site / HUB_PATH), local, VOCAB_SHA256, "encoder.vocab_url")  # a local path works too
    assert local.read_bytes() == target.read_bytes()


def test_cluener_release_is_checked_per_file(site, tmp_path) -> None:
    folder = tmp_path / "root" / "cluener"
    with pytest.raises(DataError) as error:
        download(str(site / "bad" / "cluener_public.zip"), folder)
    assert "dev.json" in str(error.value) and "fails its sha256 check" in str(error.value)
    assert not folder.exists() and os.listdir(folder.parent) == []  # not half a dataset, no zip
    with serve(site) as (url, _):
        download(f"{url}/cluener_public.zip", folder)
    assert sorted(os.listdir(folder)) == ["dev.json", "test.json", "train.json"]
    assert {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in SHA256} == SHA256
    assert os.listdir(folder.parent) == ["cluener"]
    download(str(site / "cluener_public.zip"), folder)  # a local zip; another rank got there first: kept as is
    assert os.listdir(folder.parent) == ["cluener"] and sorted(os.listdir(folder)) == ["dev.json", "test.json", "train.json"]


def _quickstart(root: Path, runs: Path, endpoint: str, *overrides: str) -> subprocess.CompletedProcess:
    """`nlpfw run quickstart` (the built-in recipe, by name) from another folder, in a fresh
    process whose HF_ENDPOINT is the local server, with an empty data root."""
    env = {**os.environ, "NLPFW_DATA_ROOT": str(root), "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"}
    args = [sys.executable, "-m", "nlpfw", "run", "quickstart", "--set", f"dataset.url={endpoint}/cluener_public.zip",
            "--set", "dataset.limit=64", "--set", "trainer.max_steps=2", "--set", "trainer.epochs=1"]  # fmt: skip
    return subprocess.run(args + [a for o in overrides for a in ("--set", o)], cwd=runs, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_quickstart_downloads_what_the_data_root_lacks_and_trains(site, tmp_path) -> None:
    root, runs = tmp_path / "data", tmp_path / "work"
    runs.mkdir()
    with serve(site) as (url, requests):
        # a corrupted vocabulary: refused, nothing kept, no run folder left behind
        bad = _quickstart(root, runs, f"{url}/bad")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "Error: encoder.vocab_url: hub://google-bert/bert-base-chinese/vocab.txt" in bad.stderr
        assert f"{url}/bad/{HUB_PATH}) fails its sha256 check" in bad.stderr
        assert not (root / "bert-base-chinese-vocab").exists() or not os.listdir(root / "bert-base-chinese-vocab")
        assert not (runs / "runs").exists() or os.listdir(runs / "runs") == []
        # the real files: downloaded with a progress bar, then the run trains
        good = _quickstart(root, runs, url)
        assert good.returncode == 0, good.stdout + good.stderr
    assert f"/{HUB_PATH}" in requests and "/cluener_public.zip" in requests
    assert "downloading encoder.vocab_url: vocab.txt" in good.stderr
    assert "downloading dataset.url: cluener_public.zip" in good.stderr or "downloading dataset.url" in good.stderr
    assert hashlib.sha256((root / "bert-base-chinese-vocab" / "vocab.txt").read_bytes()).hexdigest() == VOCAB_SHA256
    assert sorted(os.listdir(root / "cluener")) == ["dev.json", "test.json", "train.json"]
    [run] = list((runs / "runs").iterdir())
    assert run.name.startswith("quickstart-") and "Done: best dev" in good.stdout
    files = json.loads((run / "plugins.json").read_text(encoding="utf-8"))["data_files"]
    assert [f["sha256"] for f in files["train"]] == [SHA256["train.json"]]
