"""The bus between chatd processes (fan-out across nodes): a narrow interface with an
in-memory implementation (the single-process default) and a Redis pub/sub one.
See ``base.py`` for the contract and docs/design.md for the topic design."""

from .base import Bus, BusHandler, channel_of, shard_of
from .memory import MemoryBroker, MemoryBus

__all__ = ["Bus", "BusHandler", "MemoryBroker", "MemoryBus", "channel_of", "shard_of"]


def make_bus(url: str | None, shards: int, prefix: str = "chatd") -> Bus:
    """``None``: a private in-memory bus (one process); ``redis://...``: Redis pub/sub."""
    if not url:
        return MemoryBus(MemoryBroker(), shards=shards, prefix=prefix)
    from .redis import RedisBus

    return RedisBus(url, shards=shards, prefix=prefix)
