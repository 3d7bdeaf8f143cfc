"""`nlpfw serve`: /predict gives `nlpfw predict`'s records, micro-batched; bad requests get a 4xx
and a message and the server keeps serving; API key; /info, /docs, the page; SIGTERM drains."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_predict import MIXED, check_offsets

import nlpfw
from nlpfw.cli import cli

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
from nlpfw.serve.app import ServeSettings, create_app  # noqa: E402

LONG = [("张伟在上海浦东新区的华为公司担任高级工程师。" * 20)[:n] for n in (127, 300)]  # over the 126-character window
LIMITS = ServeSettings(max_wait_ms=20.0, max_body_bytes=20_000, max_chars=3_000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def model(run_dir):
    return nlpfw.load(run_dir)


@pytest.fixture(scope="module")
def base(model) -> Iterator[str]:
    with running(create_app(model, LIMITS)) as url:
        yield url


@pytest.fixture(scope="module")
def dev_texts(data_root) -> list[str]:
    from nlpfw_plugins.cluener import Cluener, CluenerConfig

    return [e.text for e in Cluener(CluenerConfig(limit=60), data_root).load("dev")]


def predict_command(run_dir: Path, texts: list[str]) -> list[dict]:
    result = CliRunner().invoke(cli, ["predict", str(run_dir), *texts], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_predict_gives_the_records_of_nlpfw_predict(base, run_dir, dev_texts):
    texts = dev_texts[:40] + MIXED + LONG
    response = httpx.post(f"{base}/predict", json={"texts": texts}, timeout=60)
    assert response.status_code == 200, response.text
    records = response.json()
    assert records == predict_command(run_dir, texts)
    assert [r["text"] for r in records] == texts
    assert sum(len(r["entities"]) for r in records) > 10  # a trained model: real entities to compare
    for record in records:
        check_offsets(record["text"], record["entities"])


def test_concurrent_requests_are_batched_and_each_gets_its_own_records(base, model, dev_texts):
    requests = [dev_texts[i : i + 3] for i in range(0, 48, 3)]  # 16 requests of 3 texts
    before = httpx.get(f"{base}/health").json()

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            return await asyncio.gather(*(client.post("/predict", json={"texts": t}) for t in requests))

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * len(requests)
    for texts, response in zip(requests, responses):
        assert response.json() == model.predict(texts)
    after = httpx.get(f"{base}/health").json()
    assert after["texts"] - before["texts"] == 48
    assert after["batches"] - before["batches"] < len(requests)  # several requests shared a model call


def test_bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving(base):
    def chunked(data: bytes) -> Iterator[bytes]:  # no Content-Length: the limit is counted as it arrives
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]

    cases = [
        (dict(content=b'{"texts": ["a"'), 400, r'the body is not valid JSON \(.*\); send \{"texts"'),
        (dict(content=b"\xff\xfe not utf-8"), 400, "the body is not valid JSON"),
        (dict(content=b""), 400, "the body is not valid JSON"),
        (dict(json={"text": "张三"}), 422, 'the body has no "texts"; send'),
        (dict(json=["张三"]), 422, 'the body has no "texts"'),
        (dict(json={"texts": "张三"}), 422, '"texts" must be a list of strings, got str'),
        (dict(json={"texts": None}), 422, '"texts" must be a list of strings, got NoneType'),
        (dict(json={"texts": ["张三", 3]}), 422, r'"texts"\[1\] is int, not a string'),
        (dict(json={"texts": [["张三"]]}), 422, r'"texts"\[0\] is list, not a string'),
        (dict(content=b'{"texts": ["ok", "\\u5f20\\ud800"]}'), 422,
         r'"texts"\[1\] is not valid Unicode: a lone surrogate at character 1'),
        (dict(json={"texts": ["x" * 30_000]}), 413, "request body of 30,01[0-9] bytes is over the limit of 20,000"),
        (dict(content=chunked(b'{"texts": ["' + b"x" * 30_000 + b'"]}')), 413,
         "request body is over the limit of 20,000 bytes"),
        (dict(json={"texts": ["北京" * 1_000, "上海" * 600]}), 413,
         "the texts hold 3,200 characters, over the limit of 3,000 a request"),
    ]  # fmt: skip
    import re

    for kwargs, status, message in cases:
        with httpx.Client(base_url=base, timeout=30) as client:
            response = client.post("/predict", **kwargs)
        assert response.status_code == status, (kwargs, response.text)
        assert re.search(message, response.json()["detail"]), response.json()
        assert httpx.get(f"{base}/health").status_code == 200  # still serving
    assert httpx.get(f"{base}/predict").status_code == 405
    assert httpx.get(f"{base}/nothing-here").status_code == 404
    empty = httpx.post(f"{base}/predict", json={"texts": []})
    assert (empty.status_code, empty.json()) == (200, [])
    ok = httpx.post(f"{base}/predict", json={"texts": ["张三在北京"]})
    assert ok.status_code == 200 and ok.json()[0]["text"] == "张三在北京"


def test_info_docs_and_the_page(base, model):
    info = httpx.get(f"{base}/info").json()
    assert info["task"] == "ner.v1" and info["labels"] == model.task.labels
    assert info["model"]["encoder"] == "bert.v1" and info["model"]["decoder"] == "crf.v1"
    assert info["model"]["runtime"] == "torch" and info["versions"]["nlpfw"] == nlpfw.__version__
    assert info["model"]["folder"] == model.directory.parent.name  # the run folder's name, not "model"
    assert info["versions"]["crf.v1"] == {"plugin": "nlpfw_plugins.crf", "version": nlpfw.__version__}
    assert info["window"] == model.model.encoder.max_chars and 0 < info["stride"] < info["window"]
    assert info["batching"] == {"enabled": True, "max_texts": 64, "max_wait_ms": 20.0}
    schema = httpx.get(f"{base}/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["texts"]["type"] == "array" and body["required"] == ["texts"]
    assert "swagger" in httpx.get(f"{base}/docs").text.lower()
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<textarea id="input"' in page.text and 'fetch("predict"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere: works offline


def test_an_api_key_guards_predict_and_info(model):
    with running(create_app(model, ServeSettings(api_key="s3cret"))) as base:
        for path, method in (("/predict", httpx.post), ("/info", httpx.get)):
            kwargs = {"json": {"texts": ["张三"]}} if method is httpx.post else {}
            for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
                response = method(f"{base}{path}", headers=headers, **kwargs)
                assert response.status_code == 401, (path, headers)
                assert response.json()["detail"] == "a valid API key is needed: send it in the X-API-Key header"
            for headers in ({"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"}):
                assert method(f"{base}{path}", headers=headers, **kwargs).status_code == 200
        assert httpx.get(f"{base}/health").status_code == 200  # liveness and the page need no key
        assert httpx.get(f"{base}/").status_code == 200


def test_batching_off_runs_each_request_alone(model, dev_texts):
    with running(create_app(model, ServeSettings(batching=False))) as base:
        async def send_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                return await asyncio.gather(*(client.post("/predict", json={"texts": [t]}) for t in dev_texts[:8]))

        responses = asyncio.run(send_all())
        assert [r.json()[0] for r in responses] == model.predict(dev_texts[:8])
        assert httpx.get(f"{base}/health").json() == {"status": "ok", "batches": 8, "texts": 8}


def test_serve_onnx_gives_the_same_records(run_dir, model, registry, tmp_path, dev_texts):
    pytest.importorskip("onnxruntime")
    from nlpfw.export import export_onnx
    from nlpfw.serve.server import load_for_serving

    graph = export_onnx(run_dir, tmp_path / "model.onnx", registry)
    served = load_for_serving(run_dir, registry, "cpu", graph, None)
    texts = dev_texts + MIXED + LONG
    with running(create_app(served, runtime="onnxruntime")) as base:
        assert httpx.get(f"{base}/info").json()["model"]["runtime"] == "onnxruntime"
        response = httpx.post(f"{base}/predict", json={"texts": texts}, timeout=60)
    assert response.json() == model.predict(texts)


def start_command(run_dir: Path, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nlpfw", "serve", str(run_dir), "--port", str(port), *options],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "NLPFW_API_KEY": ""},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "nlpfw serve did not start in 120 s"
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return process, base
        time.sleep(0.2)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # 3 processes load torch: 12 s
def test_the_serve_command_answers_and_drains_on_sigterm(run_dir, workers):
    process, base = start_command(run_dir, "--workers", str(workers))
    texts = ["张三在北京的华为公司工作", *MIXED]
    body = json.dumps({"texts": texts}, ensure_ascii=False).encode()
    sent_half = threading.Event()

    def slowly() -> Iterator[bytes]:  # the request is still arriving when SIGTERM comes
        yield body[:10]
        sent_half.set()
        time.sleep(1.5)
        yield body[10:]

    try:
        answer: dict = {}
        thread = threading.Thread(target=lambda: answer.update(r=httpx.post(f"{base}/predict", content=slowly(), timeout=60)))
        thread.start()
        assert sent_half.wait(30)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        thread.join(60)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert answer["r"].status_code == 200, output
    assert answer["r"].json() == predict_command(run_dir, texts)
    assert process.returncode == 0, output
    assert f"at {base}: the page at {base}/, the API at {base}/docs" in " ".join(output.split())
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/health", timeout=2)


def test_serve_binds_loopback_unless_told_and_warns_without_a_key(run_dir, monkeypatch):
    import nlpfw.serve.server

    calls = []
    monkeypatch.setattr(nlpfw.serve.server, "serve", lambda model, settings, host, port, *rest: calls.append((host, settings)))
    monkeypatch.delenv("NLPFW_API_KEY", raising=False)
    result = CliRunner().invoke(cli, ["serve", str(run_dir)])
    assert result.exit_code == 0 and calls[-1][0] == "127.0.0.1" and calls[-1][1].api_key is None
    assert "Warning" not in result.output
    result = CliRunner().invoke(cli, ["serve", str(run_dir), "--host", "0.0.0.0"])
    assert calls[-1][0] == "0.0.0.0"
    assert "Warning: serving on 0.0.0.0 without an API key: whoever reaches it can use it" in " ".join(result.output.split())
    result = CliRunner(env={"NLPFW_API_KEY": "k"}).invoke(cli, ["serve", str(run_dir), "--host", "0.0.0.0"])
    assert calls[-1][1].api_key == "k" and "Warning" not in result.output


def test_serve_errors(run_dir, tmp_path, monkeypatch):
    result = CliRunner().invoke(cli, ["serve", str(tmp_path)])
    assert result.exit_code == 1
    assert f"Error: {tmp_path}: not a run folder or a model folder" in result.output
    result = CliRunner().invoke(cli, ["serve", str(run_dir), "--onnx", str(tmp_path / "none.onnx")])
    assert result.exit_code == 1 and f"Error: --onnx: file not found: {tmp_path / 'none.onnx'}" in result.output
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    result = CliRunner().invoke(cli, ["serve", str(run_dir), "--onnx", str(tmp_path / "bad.onnx")])
    assert result.exit_code == 1 and f"Error: --onnx {tmp_path / 'bad.onnx'}: onnxruntime cannot load it" in result.output
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "nlpfw.serve.server", raising=False)
    result = CliRunner().invoke(cli, ["serve", str(run_dir)])
    assert result.exit_code == 1
    assert "Error: nlpfw serve needs fastapi and uvicorn (uvicorn is missing): pip install 'nlpfw[serve]'" in result.output
