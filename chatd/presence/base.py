"""The presence backend contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .rules import Change, Device, State


class PresenceBackend(Protocol):
    """Where the devices are kept: in memory (one process) or in Redis (several).
    One contract suite (tests/presence/test_contract.py) runs against both."""

    node: str
    # called with a node reaped here: it may have committed messages it never
    # published, so the app has every node resync (bus.reset_all)
    on_node_dead: Callable[[str], None] | None

    async def put(self, user: str, device: str, dev: Device, now: int) -> tuple[int, State]: ...

    async def drop(self, user: str, device: str, now: int) -> tuple[int, State]: ...

    async def get_many(self, users: list[str], now: int) -> dict[str, tuple[int, State]]: ...

    async def heartbeat(self, now: int) -> bool:
        """Renew this node's lease; True if the node was unknown (first beat, reaped
        while cut off, or Redis restarted empty): its devices must be put again."""
        ...

    async def reap(self, now: int) -> list[Change]: ...

    async def leave(self, now: int) -> list[Change]:
        """A clean stop: remove this node (and any device of it still there) now,
        so that no other node reaps it as dead."""
        ...

    async def prune(self, live: set[str], now: int) -> list[Change]:
        """Remove this node's devices that are not in ``live`` (device ids)."""
        ...

    async def close(self) -> None:
        """Release connections (after ``leave``)."""
        ...
