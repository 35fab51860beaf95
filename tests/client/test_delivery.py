"""Delivery (the I/O half of exactly-once delivery) against a scripted server:
a sync that answers a position below the one asked for says the client's
position was another store's."""

from __future__ import annotations

from typing import Any

from chatd_client.delivery import Delivery


async def test_a_sync_answering_a_lower_position_starts_over_from_it() -> None:
    emitted: list[dict[str, Any]] = []
    resets: list[bool] = []
    asked: list[dict[str, Any]] = []

    async def call(op: str, d: dict[str, Any]) -> dict[str, Any]:
        asked.append({"op": op, **d})
        return {"messages": [], "pos": 7, "more": False, "convs": [], "epoch": "e"}

    delivery = Delivery(call, emitted.append, lambda: resets.append(True))
    await delivery.offer([{"conv": "c:1", "seq": 5, "pos": 40, "kind": "text", "text": "seen"}])
    assert delivery.ordering.last("c:1") == 5
    assert await delivery.catch_up(41, fallback=None) == 7
    assert resets == [True] and delivery.ordering.last("c:1") is None  # seq 5 there means nothing now
    assert asked == [{"op": "sync", "since": 41, "limit": 500}]
    await delivery.offer([{"conv": "c:1", "seq": 2, "pos": 8, "kind": "text", "text": "new store"}])
    assert [m["text"] for m in emitted] == ["seen", "new store"]


async def test_a_normal_sync_keeps_what_was_seen() -> None:
    async def call(op: str, d: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [], "pos": d["since"], "more": False, "convs": [], "epoch": "e"}

    resets: list[bool] = []
    delivery = Delivery(call, lambda m: None, lambda: resets.append(True))
    await delivery.offer([{"conv": "c:1", "seq": 5, "pos": 40, "kind": "text"}])
    assert await delivery.catch_up(40, fallback=None) == 40
    assert not resets and delivery.ordering.last("c:1") == 5
