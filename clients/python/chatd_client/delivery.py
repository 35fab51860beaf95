"""The I/O half of exactly-once delivery: feeds pushes, ``sync`` pages and
``history`` pages through :class:`~chatd_client.ordering.Ordering` and hands
what is ready, in order, to the application.

The client calls it from a single task (its *deliverer*), so nothing here runs
concurrently with itself; requests go through the client's ``call``, which
waits for and survives reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .errors import ChatError
from .ordering import Gap, Message, Ordering

log = logging.getLogger("chatd_client")

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

HISTORY_PAGE = 100  # the protocol's maximum history limit
SYNC_PAGE = 500


class Delivery:
    def __init__(
        self, call: Call, emit: Callable[[Message], None], on_reset: Callable[[], None] | None = None
    ) -> None:
        self.ordering = Ordering()
        self.me: str | None = None  # the user's id, to recognise its own rejoin
        self._call = call
        self._emit = emit
        self._on_reset = on_reset or (lambda: None)  # told when positions turned out to be another store's

    async def offer(self, messages: Iterable[Message]) -> None:
        """Pass messages through dedup/ordering, fill gaps, emit what is ready."""
        for msg in messages:
            event = msg.get("event")
            rejoin = isinstance(event, dict) and event.get("type") == "join" and event.get("user") == self.me
            self._emit_all(self.ordering.accept(msg, rebase=rejoin))
            if self.ordering.gap(msg["conv"]) is not None:
                await self.fill_gap(msg["conv"])

    def reset(self) -> None:
        """Forget every conversation's seqs: positions from here on are another store's."""
        self.ordering = Ordering()

    async def catch_up(self, since: int, fallback: int | None) -> int | None:
        """``sync`` from ``since``, paging while ``more``; return the new position.

        If the server refuses the sync (not expected), resume at ``fallback`` (the
        new socket's auth position) rather than retrying a refused request forever.
        A sync that answers a position below ``since`` says ours was never this
        store's (a copy restored from an older backup): start over from its position.
        """
        pos = since
        convs: list[dict[str, Any]] = []
        while True:
            try:
                page = await self._call("sync", {"since": pos, "limit": SYNC_PAGE})
            except ChatError as exc:
                log.warning("sync from %s refused (%s); resuming at %s", pos, exc, fallback)
                return fallback
            if isinstance(page.get("pos"), int) and page["pos"] < pos:
                # a position this store never gave: ours was another store's (or a
                # copy restored from before it); go on from the store's real one
                log.warning("sync from %s answered %s: the server's store is not the one we had", pos, page["pos"])
                self.reset()
                self._on_reset()
                return int(page["pos"])
            await self.offer(page.get("messages") or [])
            if isinstance(page.get("pos"), int):
                pos = page["pos"]
            convs = page.get("convs") or []
            if not page.get("more"):
                break
        # A conversation whose last_seq is past what was delivered has a tail gap
        # (messages never pushed and not in the sync): fetch it.
        for c in convs:
            last = self.ordering.last(c.get("conv", ""))
            if last is not None and isinstance(c.get("last_seq"), int) and c["last_seq"] > last:
                for msg in await self.fetch(Gap(c["conv"], last + 1, c["last_seq"])):
                    self._emit_all(self.ordering.accept(msg))
        return pos

    async def fill_gap(self, conv: str) -> None:
        gap = self.ordering.gap(conv)
        while gap is not None:
            for msg in await self.fetch(gap):
                self._emit_all(self.ordering.accept(msg))
            after = self.ordering.gap(conv)
            if after == gap:
                log.warning("cannot fill %s, skipping it", gap)
                self._emit_all(self.ordering.skip_gap(conv))
                after = self.ordering.gap(conv)
            gap = after

    async def fetch(self, gap: Gap) -> list[Message]:
        """Messages ``gap.first..gap.last`` of ``gap.conv`` from ``history``, ascending."""
        got: dict[int, Message] = {}
        before = gap.before
        while before > gap.first:
            args = {"conv": gap.conv, "before": before, "limit": min(HISTORY_PAGE, before - gap.first)}
            try:
                page = await self._call("history", args)
            except ChatError as exc:
                log.warning("history for %s failed: %s", gap, exc)
                break
            batch = page.get("messages") or []
            for msg in batch:
                if gap.first <= msg["seq"] <= gap.last:
                    got[msg["seq"]] = msg
            if not batch or not page.get("more"):
                break
            before = min(m["seq"] for m in batch)
        return [got[s] for s in sorted(got)]

    def _emit_all(self, messages: list[Message]) -> None:
        for msg in messages:
            self._emit(msg)
