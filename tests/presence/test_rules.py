"""Presence rules: pure functions of now (a fake clock), and the in-memory backend."""

from __future__ import annotations

from chatd.presence import (
    AWAY,
    OFFLINE,
    ONLINE,
    Device,
    MemoryPresence,
    State,
    aggregate,
    dead_nodes,
    node_alive,
)

ALL = lambda node: True  # noqa: E731


def test_no_device_is_offline_with_the_last_seen_given() -> None:
    assert aggregate([], ALL, 1234) == State(OFFLINE, 1234, False)
    assert aggregate([], ALL, None) == State(OFFLINE, None, False)


def test_any_online_device_makes_the_user_online() -> None:
    devs = [Device("n1", AWAY, False, 100), Device("n2", ONLINE, False, 50)]
    assert aggregate(devs, ALL, 10) == State(ONLINE, None, False)


def test_all_away_is_away_since_the_last_one_went_away() -> None:
    devs = [Device("n1", AWAY, False, 100), Device("n2", AWAY, False, 250)]
    assert aggregate(devs, ALL, 10) == State(AWAY, 250, False)


def test_on_duty_if_any_live_device_is() -> None:
    devs = [Device("n1", ONLINE, False, 1), Device("n2", AWAY, True, 2)]
    assert aggregate(devs, ALL, None).on_duty is True


def test_devices_on_dead_nodes_do_not_count() -> None:
    devs = [Device("dead", ONLINE, True, 1)]
    assert aggregate(devs, lambda n: n != "dead", 99) == State(OFFLINE, 99, False)
    devs.append(Device("live", AWAY, False, 5))
    assert aggregate(devs, lambda n: n != "dead", 99) == State(AWAY, 5, False)


def test_node_lease() -> None:
    now = 1_000_000
    assert node_alive(now - 15_000, now, 15_000)
    assert not node_alive(now - 15_001, now, 15_000)
    assert not node_alive(None, now, 15_000)
    beats = {"a": now - 1000, "b": now - 20_000, "c": now}
    assert dead_nodes(beats, now, 15_000) == ["b"]
    # the same node, as the clock moves on without a heartbeat
    assert sorted(dead_nodes(beats, now + 14_500, 15_000)) == ["a", "b"]


def test_device_round_trips_through_its_packed_form() -> None:
    d = Device("n1", AWAY, True, 1_763_900_000_123)
    assert Device.unpack("n1", d.pack()) == d


async def test_memory_backend_versions_and_last_seen() -> None:
    b = MemoryPresence("n1")
    v1, s1 = await b.put("alice", "d1", Device("n1", ONLINE, False, 10), 10)
    assert s1 == State(ONLINE, None, False)
    v2, s2 = await b.put("alice", "d2", Device("n1", AWAY, True, 20), 20)
    assert v2 > v1 and s2 == State(ONLINE, None, True)
    v3, s3 = await b.drop("alice", "d1", 30)
    assert v3 > v2 and s3 == State(AWAY, 20, True)
    v4, s4 = await b.drop("alice", "d2", 40)
    assert s4 == State(OFFLINE, 40, False)
    got = await b.get_many(["alice", "nobody"], 50)
    assert got["alice"] == (v4, s4)
    assert got["nobody"] == (0, State(OFFLINE, None, False))
