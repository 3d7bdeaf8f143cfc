"""Micro-batching: requests that arrive together are predicted as one batch, off the event loop.

Each request hands its texts to `MicroBatcher.submit` and awaits its own records. One loop
takes the first waiting request, then, while other requests are still arriving (their bodies
being read), collects more for up to `max_wait` seconds or until `max_texts` texts are in hand
(a request is never split), and runs them all through the model in one call on a single
worker thread. A lone request waits for nobody; the model sorts the texts by length, so the batch
pads only to its own longest. While the model works, the next requests queue up and form the
next batch, so throughput grows with concurrency. With batching off each request is run alone,
one after another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Records = list[dict[str, Any]]


class MicroBatcher:
    """Collects the records of concurrent requests into batches for `predict` (records in,
    one output record per input, in order), which runs on one thread beside the event loop."""

    def __init__(self, predict: Callable[[Records], Records], max_texts: int = 64, max_wait: float = 0.002,
                 enabled: bool = True):  # fmt: skip
        self.predict = predict
        self.max_texts = max_texts
        self.max_wait = max_wait
        self.enabled = enabled
        self.batches = 0  # model calls so far, and the texts they held: /health shows them
        self.texts = 0
        self.arriving = 0  # requests being read that will be submitted: worth waiting for
        self._queue: asyncio.Queue[tuple[Records, asyncio.Future[Records]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="nlpfw-model")
        self._task = asyncio.create_task(self._loop(), name="nlpfw-micro-batcher")

    async def stop(self) -> None:
        """Stop after the requests in hand (the server has already drained its connections)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, records: Sequence[dict[str, Any]]) -> Records:
        """The output records of `records`, in order, once the batch holding them has run."""
        if not records:
            return []
        assert self._queue is not None, "MicroBatcher.start() was not awaited"
        future: asyncio.Future[Records] = asyncio.get_running_loop().create_future()
        await self._queue.put((list(records), future))
        return await future

    @contextlib.contextmanager
    def arrival(self) -> Iterator[None]:
        """Around reading a request that will be submitted: the batch being formed waits for it."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    async def _collect(self) -> list[tuple[Records, asyncio.Future[Records]]]:
        assert self._queue is not None
        jobs = [await self._queue.get()]
        if not self.enabled:
            return jobs
        await asyncio.sleep(0)  # let the requests whose handlers are already scheduled reach the queue
        count = len(jobs[0][0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while count < self.max_texts:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0 or not self.arriving:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        job = await self._queue.get()
                except TimeoutError:
                    break
            jobs.append(job)
            count += len(job[0])
        return jobs

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [job for job in await self._collect() if not job[1].done()]  # a client may have gone
            if not jobs:
                continue
            records = [record for job, _ in jobs for record in job]
            try:
                outputs = await loop.run_in_executor(self._executor, self.predict, records)
            except Exception as error:  # a model failure fails these requests, not the server
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            self.texts += len(records)
            begin = 0
            for job, future in jobs:
                if not future.done():
                    future.set_result(outputs[begin : begin + len(job)])
                begin += len(job)
