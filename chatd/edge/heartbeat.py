"""Keepalive pings for every socket of the process from one timer.

websockets' own keepalive runs a task per connection (a task, its coroutine
frames, a sleep's timer and future: about 1.5 KiB each, 22 MiB for 15,000
idle phones). Here one clock timer ticks once a second and checks the sockets
that fell due, kept in a wheel of per-second slots (a list entry per socket,
nothing else). A socket is checked every ``interval`` seconds:

- it sent a frame since the last check and was not pinged: it is alive, no
  ping is needed this round;
- otherwise, if it was pinged and sent nothing since (no pong, no frame), it
  is dropped (close 1011, "keepalive ping timeout");
- otherwise it is pinged (an empty ping frame).

So an idle socket is pinged every ``interval`` and dropped ``interval`` after
an unanswered ping, as with websockets' keepalive (ping timeout = interval), and
a socket that talks is not pinged at all. Sockets that ended stay in their
slot until it comes due (at most ``interval`` seconds) and are dropped then.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

from ..clock import Clock, Timer

RX = 1  # a frame arrived since the last check
PINGED = 2  # the last check sent a ping

log = logging.getLogger("chatd.server")


class Beating(Protocol):
    def heartbeat(self) -> bool:
        """One check (see the module docstring); False once the socket is
        done with (ended, or dropped by this check)."""
        ...


class Heartbeat:
    def __init__(self, clock: Clock, interval: float, tick: float = 1.0) -> None:
        self.clock = clock
        self.interval = interval
        self.tick = min(tick, interval)
        self._wheel: dict[int, list[Beating]] = {}  # slot (monotonic s // tick) -> sockets due then
        self._timer: Timer | None = None
        self.checks = 0  # sockets checked (a figure for benchmarks and tests)

    def __len__(self) -> int:
        return sum(len(s) for s in self._wheel.values())

    def add(self, sock: Beating) -> None:
        """Check ``sock`` first ``interval`` seconds from now."""
        slot = math.ceil((self.clock.monotonic() + self.interval) / self.tick)
        due = self._wheel.get(slot)
        if due is None:
            self._wheel[slot] = [sock]
        else:
            due.append(sock)
        if self._timer is None:
            self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wheel.clear()

    def _arm(self) -> None:
        self._timer = self.clock.call_later(self.tick, self._run)

    def _run(self) -> None:
        self._timer = None
        now = self.clock.monotonic()
        wheel = self._wheel
        for slot in sorted(s for s in wheel if s * self.tick <= now):
            for sock in wheel.pop(slot):
                self.checks += 1
                try:
                    again = sock.heartbeat()
                except Exception:  # one socket's failure must not stop the others' pings
                    log.exception("keepalive check failed")
                    again = False
                if again:
                    self.add(sock)
        if wheel and self._timer is None:
            self._arm()
