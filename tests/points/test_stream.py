"""The stream forwarders (chatd/points/stream.py, and chatd/notify/stream.py, the
same hook with a notification's fields) on one real redis-server and on a real
Redis Cluster: what a consumer reads with XRANGE is what was forwarded, in order.
(Through a server end to end: tests/e2e/test_points.py, tests/e2e/test_notify.py.)"""

from __future__ import annotations

import pytest
from clusterkit import redis_at as redis_at  # the fixtures: a test on one server and on the cluster,
from clusterkit import shared_cluster as shared_cluster  # the run's one cluster

from chatd.notify.stream import NotifyStreamHook
from chatd.points.stream import StreamHook
from chatd.redisurl import client
from chatd.store.records import Notification

from .test_rules import event


def test_a_cluster_url_without_usable_seeds_is_refused() -> None:
    with pytest.raises(ValueError, match="cluster seed"):
        StreamHook.from_url("redis+cluster://:6379")


async def test_events_and_notifications_land_on_their_streams(redis_at: tuple[str, str]) -> None:
    url, prefix = redis_at
    points = StreamHook.from_url(url, f"{prefix}:events")
    notes = NotifyStreamHook.from_url(url, f"{prefix}:notify")
    raw = client(url)
    try:
        for i in range(3):
            assert await points(event(key=f"message.sent:c:1:{i}", n=i)) == []
        note = Notification("bob:c:1:3", "bob", "c:1", "circle", "mention", 3, 2, "alice", "Alice", "hi", True, 5)
        assert await notes(note) == []
        got = [f for _, f in await raw.xrange(f"{prefix}:events")]
        assert [f[b"key"] for f in got] == [f"message.sent:c:1:{i}".encode() for i in range(3)]
        assert got[0][b"user"] == b"alice" and got[2][b"data"] == b'{"n":2}'
        ((_, fields),) = await raw.xrange(f"{prefix}:notify")
        assert fields[b"key"] == b"bob:c:1:3" and fields[b"silent"] == b"1" and fields[b"count"] == b"2"
    finally:
        await raw.aclose()
        await points.close()
        await notes.close()
