"""The in-memory bus: the single-process default, and a broker several nodes in
one process can share (the contract tests and multi-node tests in one loop)."""

from __future__ import annotations

import asyncio
import functools
import os

from .base import BusHandler, channel_of


class MemoryBroker:
    """Routes envelopes between the MemoryBus nodes attached to it. ``down()`` /
    ``up()`` simulate an outage (envelopes published meanwhile are lost)."""

    def __init__(self) -> None:
        self.nodes: list[MemoryBus] = []
        self.available = True

    def route(self, sender: MemoryBus, channel: str, key: str, payload: bytes) -> None:
        if not self.available:
            return
        for node in self.nodes:
            if node is not sender and node.channels.get(channel):
                asyncio.get_running_loop().call_soon(node.deliver, key, payload)

    def down(self) -> None:
        self.available = False
        for node in self.nodes:
            node.lost = True

    def up(self) -> None:
        self.available = True
        for node in self.nodes:
            if node.lost and node.running:
                node.lost = False
                if node.handler is not None:
                    asyncio.get_running_loop().call_soon(node.handler.bus_reset)


class MemoryBus:
    def __init__(self, broker: MemoryBroker, shards: int = 1024, prefix: str = "chatd") -> None:
        self.broker = broker
        self.shards = shards
        self.prefix = prefix
        self.node = os.urandom(4).hex()
        self.channels: dict[str, int] = {}
        self.handler: BusHandler | None = None
        self.running = False
        self.lost = False
        self.published = 0
        self.received = 0
        broker.nodes.append(self)

    @property
    def shared(self) -> bool:
        return len(self.broker.nodes) > 1

    @property
    def up(self) -> bool:
        return self.running and self.broker.available

    def attach(self, handler: BusHandler) -> None:
        self.handler = handler

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False
        if self in self.broker.nodes:
            self.broker.nodes.remove(self)

    def channel(self, key: str) -> str:
        return channel_of(self.prefix, key, self.shards)

    def interest(self, key: str, delta: int) -> None:
        channel = channel_of(self.prefix, key, self.shards)
        n = self.channels.get(channel, 0) + delta
        if n > 0:
            self.channels[channel] = n
        else:
            self.channels.pop(channel, None)

    async def ready(self, key: str) -> None:
        return None

    def publish(self, key: str, payload: bytes) -> None:
        if not self.running or len(self.broker.nodes) < 2:
            return
        self.published += 1
        self.broker.route(self, channel_of(self.prefix, key, self.shards), key, payload)

    def reset_all(self, why: str) -> None:
        loop = asyncio.get_running_loop()
        for node in self.broker.nodes:
            if node.running and node.handler is not None:
                loop.call_soon(functools.partial(node.handler.bus_reset, reconnected=False))

    def deliver(self, key: str, payload: bytes) -> None:
        if self.running and self.handler is not None:
            self.received += 1
            self.handler.bus_message(key, payload)

    def health(self) -> dict[str, int]:
        return {"links": 1, "links_up": int(self.up)}

    def stats(self) -> dict[str, int]:
        return {"channels": len(self.channels), "published": self.published, "received": self.received}
