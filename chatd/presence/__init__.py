"""Presence, never stored as messages: online / away / offline and last seen per user,
aggregated over every device on every node; staff on-duty state; subscriptions
to specific users with pushes on change.

Laid out like ``bus/``: pure rules (``rules.py``), the backend contract
(``base.py``), two backends (``memory.py`` for one process, ``redis.py`` for
several; one contract suite runs against both), and the node-local service
that the ops and the edge talk to (``service.py``).
"""

from __future__ import annotations

from .base import PresenceBackend
from .memory import MemoryPresence
from .rules import AWAY, LEASE_MS, OFFLINE, ONLINE, Change, Device, State, aggregate, dead_nodes, node_alive
from .service import Presence


def make_backend(url: str | None, node: str, prefix: str = "chatd", lease_ms: int = LEASE_MS) -> PresenceBackend:
    """``None``: devices kept in this process; ``redis://...`` or
    ``redis+cluster://...``: shared in Redis (one server or a cluster)."""
    if not url:
        return MemoryPresence(node)
    from .redis import RedisPresence

    return RedisPresence.from_url(url, node, prefix, lease_ms)


__all__ = [
    "AWAY",
    "LEASE_MS",
    "OFFLINE",
    "ONLINE",
    "Change",
    "Device",
    "MemoryPresence",
    "Presence",
    "PresenceBackend",
    "State",
    "aggregate",
    "dead_nodes",
    "make_backend",
    "node_alive",
]
