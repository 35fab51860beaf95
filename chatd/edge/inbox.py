"""A socket's inbound request queue: requests waiting for the socket's worker,
run one at a time in arrival order (a ``send`` that arrives while the worker is
busy queues behind it, so requests take effect in the order they were sent).

Water marks: past ``HIGH_WATER`` bytes of queued frames the socket stops being
read (TCP pushes back on the client) until the queue is under ``LOW_WATER``, so
input memory per socket is bounded without closing bursty but honest clients.
The hard limits (``MAX_QUEUED`` requests, ``MAX_QUEUED_BYTES``) only trip on
frames already read when reading paused: the socket is then closed as a flood.

An inbox exists only while requests wait or run: an idle socket holds none (an
empty deque alone was 600 bytes, times every idle socket).
"""

from __future__ import annotations

import asyncio
from asyncio import Transport
from collections import deque
from collections.abc import Awaitable
from typing import Protocol

from chatd_protocol import Request, RequestError

# What waits: a request, or the refusal of a malformed one that came behind
# the auth (answered in its turn, after the auth reply)
Item = Request | RequestError

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
MAX_QUEUED = 1000
MAX_QUEUED_BYTES = 4 << 20


class Owner(Protocol):
    def accepting(self) -> bool:
        """Whether queued requests may still run (the session is open or closing)."""
        ...

    async def dispatch(self, req: Item) -> None: ...

    def idle(self) -> None:
        """The worker finished and nothing waits: drop the inbox."""
        ...


class Inbox:
    __slots__ = ("owner", "paused", "queue", "queued_bytes", "task", "transport")

    def __init__(self, transport: Transport, owner: Owner) -> None:
        self.transport = transport
        self.owner = owner
        self.queue: deque[tuple[Item, int]] = deque()  # (request, frame size), in order
        self.queued_bytes = 0
        self.paused = False  # reading paused while the queue is over HIGH_WATER
        self.task: asyncio.Task[None] | None = None

    def put(self, req: Item, size: int) -> bool:
        """Queue ``req``; False when over the hard limits (the caller closes as a flood)."""
        if len(self.queue) >= MAX_QUEUED or self.queued_bytes + size > MAX_QUEUED_BYTES:
            return False
        self.queue.append((req, size))
        self.queued_bytes += size
        if self.queued_bytes > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        if self.task is None:
            self.start()
        return True

    def start(self, first: Awaitable[None] | None = None) -> None:
        """Run the worker: ``first`` (the auth), then the queue."""
        self.task = asyncio.get_running_loop().create_task(self._work(first))

    def clear(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0

    async def _work(self, first: Awaitable[None] | None) -> None:
        try:
            if first is not None:
                await first
            queue = self.queue
            while queue and self.owner.accepting():
                req, size = queue.popleft()
                self.queued_bytes -= size
                if self.paused and self.queued_bytes < LOW_WATER:
                    self.paused = False
                    self.transport.resume_reading()
                await self.owner.dispatch(req)
        finally:
            self.task = None
            if not self.queue:
                self.owner.idle()
