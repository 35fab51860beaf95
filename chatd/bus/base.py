"""The bus contract.

Keys and channels
-----------------
Callers speak of *keys*: ``c:<conv>`` (a conversation) and ``u:<user>`` (a user).
The bus maps every key onto one of ``shards`` channels per kind,
``<prefix>:c:<n>`` / ``<prefix>:u:<n>``, with ``n = crc32(key) % shards``. A node
subscribes to a channel while it has local interest in at least one key of it
(reference counted), so the number of subscriptions per node is bounded by
``2 * shards`` whatever the number of conversations or users, and a push to a
conversation of any size is one PUBLISH. Receivers drop envelopes for keys they
have no interest in (one dict lookup, no payload decoding).

Semantics every implementation keeps (tests/bus/test_contract.py runs against both):

- ``publish(key, payload)`` never blocks and never raises; envelopes from one node
  arrive at every other interested node in the order they were published. Delivery
  is at most once: anything may be lost while the bus is down.
- A node does not receive its own envelopes.
- ``interest(key, +1/-1)`` changes the node's subscriptions; ``await ready(key)``
  returns once envelopes for ``key`` published from now on will arrive (or at once
  when the bus is down: the caller relies on catch-up then).
- ``up`` is False while the bus cannot deliver everywhere (on a cluster: while
  any shard's master is unreachable; ``health()`` says how many are). Whenever it comes back after a loss
  (and after the first connect), the handler's ``bus_reset()`` runs: envelopes may
  have been lost, so the node resynchronises its caches and tells its clients to
  catch up.
"""

from __future__ import annotations

import zlib
from typing import Protocol


class BusHandler(Protocol):
    def bus_message(self, key: str, payload: bytes) -> None: ...

    def bus_reset(self, reconnected: bool = True) -> None:
        """Envelopes may have been lost. ``reconnected``: this node's link to the
        bus was (re)established (Redis may have restarted empty); False: another
        node lost envelopes (``reset_all``), the bus itself kept its state."""


def shard_of(key: str, shards: int) -> int:
    return zlib.crc32(key.encode()) % shards


def channel_of(prefix: str, key: str, shards: int) -> str:
    """``c:dm:a:b`` -> ``chatd:c:<shard>``; the key's kind letter picks the channel family."""
    return f"{prefix}:{key[0]}:{shard_of(key, shards)}"


class Bus(Protocol):
    node: str  # this node's id (envelopes carry it so a node skips its own)

    @property
    def shared(self) -> bool:
        """False: no other node can exist (a private in-memory bus): skip publishing."""
        ...

    @property
    def up(self) -> bool: ...

    def attach(self, handler: BusHandler) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def channel(self, key: str) -> str: ...

    def interest(self, key: str, delta: int) -> None: ...

    async def ready(self, key: str) -> None: ...

    def publish(self, key: str, payload: bytes) -> None: ...

    def reset_all(self, why: str) -> None:
        """Every node (this one included) runs ``bus_reset`` soon: something
        other nodes may have missed happened outside the bus (a node died)."""

    def health(self) -> dict[str, int]:
        """``links``: the Redis servers the bus uses (a cluster's masters), and
        ``links_up``: how many of them deliver. Some but not all up: the bus is
        degraded (a shard failing over), not down."""
        ...

    def stats(self) -> dict[str, int]: ...
