"""Presence kept in this process: devices in a dict; this node is always alive."""

from __future__ import annotations

from collections.abc import Callable

from .rules import Change, Device, State, aggregate


class MemoryPresence:
    """One process: devices in a dict; this node is always alive."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.on_node_dead: Callable[[str], None] | None = None  # nodes never die here
        self.devices: dict[str, dict[str, Device]] = {}
        self.last_seen: dict[str, int] = {}
        self.versions: dict[str, int] = {}

    def _state(self, user: str) -> tuple[int, State]:
        devs = self.devices.get(user, {})
        return self.versions.get(user, 0), aggregate(devs.values(), lambda n: True, self.last_seen.get(user))

    def _bump(self, user: str) -> None:
        self.versions[user] = self.versions.get(user, 0) + 1

    async def put(self, user: str, device: str, dev: Device, now: int) -> tuple[int, State]:
        self.devices.setdefault(user, {})[device] = dev
        self._bump(user)
        return self._state(user)

    async def drop(self, user: str, device: str, now: int) -> tuple[int, State]:
        devs = self.devices.get(user)
        if devs is not None:
            devs.pop(device, None)
            if not devs:
                del self.devices[user]
        self.last_seen[user] = now
        if len(self.last_seen) > 200_000:  # bounded: forget the longest-gone users
            for old in list(self.last_seen)[:50_000]:
                if old not in self.devices:
                    self.last_seen.pop(old, None)
                    self.versions.pop(old, None)
        self._bump(user)
        return self._state(user)

    async def get_many(self, users: list[str], now: int) -> dict[str, tuple[int, State]]:
        return {u: self._state(u) for u in users}

    async def heartbeat(self, now: int) -> bool:
        return False

    async def reap(self, now: int) -> list[Change]:
        return []

    async def leave(self, now: int) -> list[Change]:
        """A clean stop: every device is this node's."""
        return await self.prune(set(), now)

    async def prune(self, live: set[str], now: int) -> list[Change]:
        changes: list[Change] = []
        for user, devs in list(self.devices.items()):
            stale = [d for d in devs if d not in live]
            if stale:
                for device in stale[:-1]:
                    devs.pop(device)
                version, state = await self.drop(user, stale[-1], now)
                changes.append((user, version, state))
        return changes

    async def close(self) -> None:
        pass
