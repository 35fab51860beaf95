"""Dedup, ordering and gap detection of chatd_client.ordering (no I/O)."""

from __future__ import annotations

from typing import Any

from chatd_client.ordering import Gap, Ordering


def m(conv: str, seq: int, text: str = "") -> dict[str, Any]:
    return {"conv": conv, "seq": seq, "text": text or f"{conv}#{seq}"}


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [msg["seq"] for msg in messages]


def test_first_message_is_the_baseline_without_replay() -> None:
    o = Ordering()
    assert seqs(o.accept(m("c:1", 40))) == [40]
    assert o.last("c:1") == 40
    assert o.gap("c:1") is None
    assert seqs(o.accept(m("c:1", 41))) == [41]


def test_duplicates_are_dropped() -> None:
    o = Ordering()
    o.accept(m("c:1", 1))
    o.accept(m("c:1", 2))
    assert o.accept(m("c:1", 2)) == []
    assert o.accept(m("c:1", 1)) == []
    assert o.last("c:1") == 2


def test_conversations_are_independent() -> None:
    o = Ordering()
    assert seqs(o.accept(m("c:1", 5))) == [5]
    assert seqs(o.accept(m("dm:a:b", 1))) == [1]
    assert seqs(o.accept(m("c:1", 6))) == [6]
    assert o.accept(m("dm:a:b", 1)) == []
    assert (o.last("c:1"), o.last("dm:a:b")) == (6, 1)


def test_a_gap_is_reported_and_later_messages_wait_for_it() -> None:
    o = Ordering()
    o.accept(m("c:1", 3))
    assert o.accept(m("c:1", 6)) == []
    assert o.accept(m("c:1", 7)) == []
    assert o.gap("c:1") == Gap("c:1", 4, 5)
    assert o.gap("c:1").before == 6  # type: ignore[union-attr]
    assert o.gaps() == [Gap("c:1", 4, 5)]
    # the gap is filled (as history would), out of order and with a duplicate
    assert o.accept(m("c:1", 5)) == []
    assert seqs(o.accept(m("c:1", 4))) == [4, 5, 6, 7]
    assert o.accept(m("c:1", 5)) == []
    assert o.gap("c:1") is None
    assert o.last("c:1") == 7


def test_buffered_duplicate_is_kept_once() -> None:
    o = Ordering()
    o.accept(m("c:1", 1))
    first = m("c:1", 3, "first copy")
    o.accept(first)
    o.accept(m("c:1", 3, "second copy"))
    out = o.accept(m("c:1", 2))
    assert seqs(out) == [2, 3]
    assert out[1]["text"] == "first copy"


def test_two_gaps_are_reported_one_after_the_other() -> None:
    o = Ordering()
    o.accept(m("c:1", 1))
    o.accept(m("c:1", 4))
    o.accept(m("c:1", 8))
    assert o.gap("c:1") == Gap("c:1", 2, 3)
    o.accept(m("c:1", 2))
    assert seqs(o.accept(m("c:1", 3))) == [3, 4]
    assert o.gap("c:1") == Gap("c:1", 5, 7)


def test_skip_gap_releases_the_buffer_in_order() -> None:
    o = Ordering()
    o.accept(m("c:1", 1))
    o.accept(m("c:1", 5))
    o.accept(m("c:1", 4))
    o.accept(m("c:1", 9))
    assert seqs(o.skip_gap("c:1")) == [4, 5]
    assert o.gap("c:1") == Gap("c:1", 6, 8)
    assert seqs(o.skip_gap("c:1")) == [9]
    assert o.gap("c:1") is None
    assert o.skip_gap("c:1") == []
    assert o.accept(m("c:1", 3)) == []  # late arrival from the skipped range


def test_rebase_makes_a_rejoin_the_new_baseline() -> None:
    o = Ordering()
    o.accept(m("c:1", 3))
    assert seqs(o.accept(m("c:1", 10), rebase=True)) == [10]
    assert o.gap("c:1") is None
    assert o.accept(m("c:1", 10), rebase=True) == []  # still deduplicated
    assert seqs(o.accept(m("c:1", 11))) == [11]


def test_rebase_releases_buffered_successors() -> None:
    o = Ordering()
    o.accept(m("c:1", 3))
    o.accept(m("c:1", 11))
    assert seqs(o.accept(m("c:1", 10), rebase=True)) == [10, 11]


def test_sync_replay_overlapping_pushes_delivers_each_once_in_order() -> None:
    """The reconnect scenario: pushes already delivered, then a sync page that
    overlaps them and interleaves conversations, then buffered pushes."""
    o = Ordering()
    delivered: list[tuple[str, int]] = []

    def feed(msgs: list[dict[str, Any]]) -> None:
        for msg in msgs:
            delivered.extend((x["conv"], x["seq"]) for x in o.accept(msg))

    feed([m("a", 1), m("a", 2), m("b", 7)])
    feed([m("a", 2), m("b", 7), m("a", 3), m("b", 8), m("a", 4)])  # sync page
    feed([m("a", 4), m("b", 9), m("a", 5)])  # pushes that waited behind the sync
    assert delivered == [("a", 1), ("a", 2), ("b", 7), ("a", 3), ("b", 8), ("a", 4), ("b", 9), ("a", 5)]
