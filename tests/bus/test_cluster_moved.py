"""What a cluster's MOVED/ASK answer to a subscriber means to the bus (pure logic: the
bus is not started; the behaviour on a real cluster is in test_cluster_bus.py)."""

from __future__ import annotations

import pytest

from chatd import redisurl
from chatd.bus.redis import RedisBus


def _bus(url: str = "redis+cluster://10.0.0.1:7000") -> RedisBus:
    return RedisBus(url, shards=16, prefix="t")


def test_a_moved_slot_orphans_its_wanted_channels_and_names_the_node_to_ask() -> None:
    bus = _bus()
    bus.interest("c:a", 1)
    channel = bus.channel("c:a")
    slot = redisurl.slot(channel)
    assert bus.moved(f"MOVED {slot} 10.0.0.2:7001", "redis://10.0.0.1:7000")
    assert bus._orphans == {channel}
    assert bus._map_hint is not None and "10.0.0.2:7001" in bus._map_hint
    assert bus._map_wanted.is_set()  # the map is read again at once


def test_a_moved_without_a_host_is_asked_at_the_node_that_answered() -> None:
    bus = _bus()
    assert bus.moved("ASK 1 :7005", "redis://10.0.0.3:7002")
    assert bus._map_hint is not None and "10.0.0.3:7005" in bus._map_hint
    assert bus._orphans == set()  # nothing wanted lives in slot 1


@pytest.mark.parametrize(
    "error",
    ["ERR unknown command", "MOVED", "MOVED x 10.0.0.2:7001", "MOVED 12", "CLUSTERDOWN The cluster is down", ""],
)
def test_other_errors_are_not_a_moved_slot(error: str) -> None:
    bus = _bus()
    bus.interest("c:a", 1)
    assert not bus.moved(error, "redis://10.0.0.1:7000")
    assert bus._orphans == set()


def test_on_one_server_a_moved_is_not_followed() -> None:
    bus = _bus("redis://10.0.0.1:6379")
    assert not bus.moved("MOVED 12 10.0.0.2:7001", "redis://10.0.0.1:6379")
