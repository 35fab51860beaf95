"""Group commit: many writers, one transaction per batch, results in commit order.

``submit(op, on_commit, on_error)`` queues a write operation. A single task takes
everything queued (up to ``max_batch``), runs it as one transaction on the
store's writer thread, then, in order, calls each op's ``on_commit(result)`` (or
``on_error(exc)``). While one batch commits, the next one fills up: batching
grows with load and costs no latency at low load (no timer).

``on_commit`` callbacks run synchronously in commit (pos) order: that is where
pushes are published, so every member sees a conversation in seq order. While
they run, socket output is corked (the edge's ``Output``, seen here as a
:class:`Cork`), so a socket that receives several frames from one batch (acks,
pushes) gets them in one write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from chatd_protocol import Err, RequestError

from ..metrics import Metrics
from ..store import Store, StoreUnavailable, Write

log = logging.getLogger("chatd.pipeline")

T = TypeVar("T")
OnCommit = Callable[[Any], None]
OnError = Callable[[RequestError], None]


class Cork(Protocol):
    """Output held back while a batch's commit callbacks run, then written at once."""

    def cork(self) -> None: ...

    def uncork(self) -> None: ...


class _NoCork:
    def cork(self) -> None:
        pass

    def uncork(self) -> None:
        pass


def _ignore(exc: RequestError) -> None:
    pass


class Pipeline:
    def __init__(self, store: Store, metrics: Metrics, output: Cork | None = None, max_batch: int = 2000) -> None:
        self.store = store
        self.metrics = metrics
        self.output: Cork = output if output is not None else _NoCork()
        self.max_batch = max_batch
        self._queue: deque[tuple[Write[Any], OnCommit | None, OnError]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # Highest committed message pos, updated before any on_commit of a batch
        # runs. Set from the store at start, with the store's epoch (the name of
        # its position space, said in every auth and sync reply).
        self.head = 0
        self.epoch = ""
        self.failing = False  # the last batch could not commit (health: the store is failing)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def backlog(self) -> int:
        """Writes queued and not yet in a batch."""
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="chatd-pipeline")

    def submit(self, op: Write[T], on_commit: Callable[[T], None] | None = None, on_error: OnError = _ignore) -> None:
        """Queue ``op``. After COMMIT, ``on_commit(result)``; if the op was refused
        or the batch failed, ``on_error(RequestError)`` (``unavailable`` when the
        store could not commit: nothing of the batch was stored)."""
        if self._task is None or self._task.done():
            raise RequestError(Err.UNAVAILABLE, "the store is not accepting writes")
        self._queue.append((op, on_commit, on_error))
        if self._idle.is_set():
            self._idle.clear()
            self._wake.set()

    async def write(self, op: Write[T], on_commit: Callable[[T], None] | None = None) -> T:
        """Submit and wait: the op's result, or its RequestError raised."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def done(result: T) -> None:
            try:
                if on_commit is not None:
                    on_commit(result)
            finally:
                if not fut.done():  # the writer may have stopped waiting (cancelled)
                    fut.set_result(result)

        def failed(exc: RequestError) -> None:
            if not fut.done():
                fut.set_exception(exc)

        self.submit(op, done, failed)
        return await fut

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
            except Exception as exc:  # nothing of the batch was committed
                if isinstance(exc, StoreUnavailable):
                    log.error("store batch of %d failed: %s", n, exc)
                else:
                    log.exception("store batch of %d failed", n)
                self.metrics.store_failures.inc()
                self.failing = True
                unavailable = RequestError(Err.UNAVAILABLE, "the store could not take the write; retry")
                self._deliver(batch, [unavailable] * n)
                continue
            self.failing = False
            self.metrics.batch_size.observe(n)
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            self._deliver(batch, results)

    def _deliver(self, batch: list[tuple[Write[Any], OnCommit | None, OnError]], results: list[Any]) -> None:
        output = self.output
        output.cork()
        try:
            for (_, on_commit, on_error), result in zip(batch, results, strict=True):
                try:
                    if isinstance(result, BaseException):
                        if not isinstance(result, RequestError):
                            log.error("write op failed", exc_info=result)
                            result = RequestError(Err.INTERNAL, "internal error")
                        on_error(result)
                    elif on_commit is not None:
                        on_commit(result)
                except Exception:
                    log.exception("commit callback failed")
        finally:
            output.uncork()
