"""Presence rules: pure functions of ``now`` (``aggregate``, ``node_alive``,
``dead_nodes``), tested with a fake clock (tests/presence/test_rules.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

ONLINE, AWAY, OFFLINE = "online", "away", "offline"
LEASE_MS = 15_000



@dataclass(frozen=True, slots=True)
class Device:
    node: str
    status: str  # ONLINE or AWAY
    duty: bool  # staff on duty
    since: int  # ms: when this device last changed status

    def pack(self) -> str:
        return f"{self.status}|{int(self.duty)}|{self.since}"

    @classmethod
    def unpack(cls, node: str, value: str) -> Device:
        status, duty, since = value.split("|")
        return cls(node, status, duty == "1", int(since))


@dataclass(frozen=True, slots=True)
class State:
    status: str
    last_seen: int | None  # ms; None while online
    on_duty: bool

    def wire(self, user: str) -> dict[str, Any]:
        out: dict[str, Any] = {"user": user, "status": self.status, "on_duty": self.on_duty}
        if self.last_seen is not None:
            out["last_seen"] = self.last_seen
        return out


def node_alive(heartbeat_ms: float | None, now: int, lease_ms: int = LEASE_MS) -> bool:
    return heartbeat_ms is not None and now - heartbeat_ms <= lease_ms


def dead_nodes(heartbeats: dict[str, float], now: int, lease_ms: int = LEASE_MS) -> list[str]:
    return [node for node, beat in heartbeats.items() if not node_alive(beat, now, lease_ms)]


def aggregate(devices: Iterable[Device], alive: Callable[[str], bool], last_seen: int | None) -> State:
    """A user is online if any live device is; away if every live device is
    away (last seen: when the last of them went away); offline with no live
    device (last seen: when the last one went). On duty if any live device is."""
    live = [d for d in devices if alive(d.node)]
    if not live:
        return State(OFFLINE, last_seen, False)
    duty = any(d.duty for d in live)
    if any(d.status == ONLINE for d in live):
        return State(ONLINE, None, duty)
    return State(AWAY, max(d.since for d in live), duty)


Change = tuple[str, int, State]  # user, version, state
