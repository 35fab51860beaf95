"""A built-in hook that forwards every interaction event to a Redis stream, for an
external points service: ``XADD <stream> MAXLEN ~ 1000000 * key .. kind .. user ..``.

At least once: after a crash between the XADD and the cursor's commit the event
is added again; consumers deduplicate by ``key``, the event's idempotency key. A
consumer group reads it in the usual way (``XREADGROUP GROUP points c1 COUNT
100 STREAMS chatd:events >``, then ``XACK``). It awards nothing itself.
"""

from __future__ import annotations

from typing import Any, Self

import orjson

from .. import redisurl
from .model import Award, Event


class StreamHook:
    def __init__(self, client: Any, stream: str = "chatd:events", maxlen: int = 1_000_000) -> None:
        """``client``: a redis-py asyncio ``Redis`` or ``RedisCluster``."""
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self.name = f"stream:{stream}"

    @classmethod
    def from_url(cls, url: str, stream: str = "chatd:events") -> Self:
        """``url``: one server or a cluster (the stream is one key, on the master
        of its slot). ValueError for a cluster URL without usable seeds."""
        return cls(redisurl.client(url, socket_connect_timeout=1.0, socket_timeout=2.0), stream)

    async def close(self) -> None:
        await self.client.aclose()

    def fields(self, event: Event) -> dict[Any, Any]:
        return {
            "key": event.key,
            "kind": event.kind,
            "user": event.user,
            "conv": event.conv or "",
            "ts": event.ts,
            "day": event.day,
            "data": orjson.dumps(event.data),
        }

    async def __call__(self, event: Event) -> list[Award]:
        await self.client.xadd(self.stream, self.fields(event), maxlen=self.maxlen, approximate=True)
        return []
