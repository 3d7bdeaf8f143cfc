"""The micro-batcher on its own: requests that arrive together share a model call, each gets its
own records in order, a request is never split, a failing batch fails only its requests."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("fastapi")
from nlpfw.serve.batching import MicroBatcher  # noqa: E402


class Recorder:
    """A stand-in model: records each call's texts, answers with their lengths."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on

    def __call__(self, records):
        texts = [r["text"] for r in records]
        self.calls.append(texts)
        self.threads.add(threading.current_thread().name)
        if self.fail_on in texts:
            raise RuntimeError("model failure")
        return [{"text": t, "length": len(t)} for t in texts]


async def run(batcher: MicroBatcher, requests: list[list[str]]) -> list:
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit([{"text": t} for t in texts]) for texts in requests),
                                    return_exceptions=True)  # fmt: skip
    finally:
        await batcher.stop()


def test_requests_that_arrive_together_share_a_call_and_get_their_own_records():
    model = Recorder()
    requests = [[f"{i}-{j}" * (i + 1) for j in range(i % 3 + 1)] for i in range(12)]
    results = asyncio.run(run(MicroBatcher(model, max_texts=64), requests))
    for texts, records in zip(requests, results):
        assert records == [{"text": t, "length": len(t)} for t in texts]
    assert sorted(t for call in model.calls for t in call) == sorted(t for r in requests for t in r)
    assert len(model.calls) < len(requests)  # batched: the first alone, the rest together
    assert model.threads == {"nlpfw-model_0"}  # off the event loop, on one model thread


def test_a_batch_closes_at_max_texts_and_never_splits_a_request():
    model = Recorder()
    requests = [["a", "b", "c"]] * 6 + [["x"] * 10]
    asyncio.run(run(MicroBatcher(model, max_texts=4), requests))
    for call in model.calls:
        sizes, at = [], 0
        while at < len(call):  # the call as the requests it joined: "a b c" is one, ten "x" another
            size = 3 if call[at] == "a" else 10
            assert call[at : at + size] == (["a", "b", "c"] if size == 3 else ["x"] * 10)  # whole
            sizes.append(size)
            at += size
        assert sum(sizes[:-1]) < 4  # it closed as soon as 4 texts were in hand
    assert sum(len(call) for call in model.calls) == 28 and len(model.calls) >= 3


def test_batching_off_runs_each_request_alone():
    model = Recorder()
    requests = [["a"], ["b", "c"], ["d"]]
    results = asyncio.run(run(MicroBatcher(model, enabled=False), requests))
    assert model.calls == requests
    assert [[r["text"] for r in records] for records in results] == requests


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    model = Recorder(fail_on="boom")

    async def scenario():
        batcher = MicroBatcher(model)
        await batcher.start()
        try:
            with pytest.raises(RuntimeError, match="model failure"):
                await batcher.submit([{"text": "boom"}])
            return await batcher.submit([{"text": "fine"}]), await batcher.submit([])
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == ([{"text": "fine", "length": 4}], [])
