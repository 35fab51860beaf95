"""The presence service on one node (chatd/presence/service.py), on backends of
the test's own: what its stop waits for when the backend is away."""

from __future__ import annotations

import time
from typing import Any

from support import FakeSink

from chatd.bus.memory import MemoryBroker, MemoryBus
from chatd.clock import SystemClock
from chatd.presence import MemoryPresence
from chatd.presence.service import Presence


class Away(MemoryPresence):
    """Redis is unreachable: every change fails (and is retried with backoff)."""

    async def put(self, *args: Any) -> Any:
        raise ConnectionError("away")

    async def drop(self, *args: Any) -> Any:
        raise ConnectionError("away")

    async def leave(self, now: int) -> Any:
        raise ConnectionError("away")


async def test_stop_with_the_backend_away_waits_once_not_once_per_socket() -> None:
    """A server stopping while Redis is away closes every socket first: each has a
    drop that cannot land. Stop gives them one second together (it gave each one
    in turn: 20 sockets were 20 s, and a busy node would outlive its stop timeout)."""
    presence = Presence(Away("n1"), MemoryBus(MemoryBroker()), SystemClock(), lambda slot, kind, d: b"")
    sinks = [FakeSink(0) for _ in range(10)]
    for i, sink in enumerate(sinks):
        presence.opened(sink, f"u{i}")
    for sink in sinks:
        presence.closed(sink)
    started = time.monotonic()
    try:
        await presence.stop()
        assert time.monotonic() - started < 2.5
    finally:
        for task in list(presence._chains.values()):  # still retrying: the process would exit now
            task.cancel()
