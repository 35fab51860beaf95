"""Group commit: many writers, one transaction per batch, results in commit order.

``submit(op, on_commit)`` queues a write operation. A single task takes
everything queued (up to ``max_batch``), runs it as one transaction on the
store's writer thread, then, in order, calls each ``on_commit(result)`` and
resolves each future. While one batch commits, the next one fills up: batching
grows with load and costs no latency at low load (no timer).

``on_commit`` callbacks run synchronously in commit (pos) order: that is where
pushes are published, so every member sees a conversation in seq order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from chatd_protocol import Err, RequestError

from .metrics import Metrics
from .store import Store, StoreUnavailable
from .store.engine import WriteOp

log = logging.getLogger("chatd.pipeline")

OnCommit = Callable[[Any], None]


class Pipeline:
    def __init__(self, store: Store, metrics: Metrics, max_batch: int = 2000) -> None:
        self.store = store
        self.metrics = metrics
        self.max_batch = max_batch
        self._queue: deque[tuple[WriteOp, asyncio.Future[Any], OnCommit | None]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # Highest committed message pos, updated before any on_commit of a batch
        # runs. Set from the store at start.
        self.head = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="chatd-pipeline")

    def submit(self, op: WriteOp, on_commit: OnCommit | None = None) -> asyncio.Future[Any]:
        """Queue ``op``; the future resolves with its result after COMMIT (or
        raises the RequestError the op raised, or RequestError(unavailable))."""
        if self._task is None or self._task.done():
            raise RequestError(Err.UNAVAILABLE, "the store is not accepting writes")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, fut, on_commit))
        self._idle.clear()
        self._wake.set()
        return fut

    async def write(self, op: WriteOp) -> Any:
        return await self.submit(op)

    async def drain(self) -> None:
        """Wait until everything submitted so far has committed (or failed)."""
        await self._idle.wait()

    async def stop(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            n = min(len(queue), self.max_batch)
            batch = [queue.popleft() for _ in range(n)]
            started = time.perf_counter()
            try:
                results, self.head = await self.store.run_batch([op for op, _, _ in batch])
            except StoreUnavailable as exc:
                log.error("store batch of %d failed: %s", n, exc)
                self.metrics.store_failures.inc()
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(RequestError(Err.UNAVAILABLE, "the store could not take the write; retry"))
                continue
            self.metrics.batch_size.observe(n)
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            for (_, fut, on_commit), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, RequestError):
                        log.error("write op failed", exc_info=result)
                        result = RequestError(Err.INTERNAL, "internal error")
                    if not fut.done():
                        fut.set_exception(result)
                    continue
                if on_commit is not None:
                    try:
                        on_commit(result)
                    except Exception:
                        log.exception("on_commit callback failed")
                if not fut.done():
                    fut.set_result(result)
