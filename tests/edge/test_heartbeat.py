"""The shared heartbeat's wheel (chatd/edge/heartbeat.py) as pure logic: each
socket is checked once per interval from one clock timer, a socket that is
done leaves the wheel, one failing check does not stop the others. What a
client sees (pings, pongs, the 1011 close) is tests/e2e/test_keepalive.py."""

from __future__ import annotations

from collections.abc import Callable

from chatd.clock import ManualClock, Timer
from chatd.edge.heartbeat import Heartbeat


class Sock:
    def __init__(self, name: str, log: list[tuple[str, float]], clock: ManualClock, lives: int = 1000) -> None:
        self.name, self.log, self.clock, self.lives = name, log, clock, lives

    def heartbeat(self) -> bool:
        self.log.append((self.name, self.clock.monotonic()))
        self.lives -= 1
        if self.name == "bad":
            raise RuntimeError("boom")
        return self.lives > 0


def test_each_socket_is_checked_once_per_interval_from_one_timer() -> None:
    clock = ManualClock()
    hb = Heartbeat(clock, 20.0)
    log: list[tuple[str, float]] = []
    hb.add(Sock("a", log, clock))
    clock.advance(7)
    hb.add(Sock("b", log, clock))
    assert clock.pending == 1
    for _ in range(70):
        clock.advance(1)
    t0 = 1000.0
    assert log == [("a", t0 + 20), ("b", t0 + 27), ("a", t0 + 40), ("b", t0 + 47), ("a", t0 + 60), ("b", t0 + 67)]
    assert hb.checks == 6 and len(hb) == 2


def test_a_socket_that_is_done_leaves_the_wheel_and_the_timer_stops() -> None:
    clock = ManualClock()
    hb = Heartbeat(clock, 5.0)
    log: list[tuple[str, float]] = []
    hb.add(Sock("short", log, clock, lives=2))
    for _ in range(30):
        clock.advance(1)
    assert [n for n, _ in log] == ["short", "short"]
    assert len(hb) == 0 and clock.pending == 0  # nothing left to check: no timer either


def test_a_failing_check_drops_that_socket_only() -> None:
    clock = ManualClock()
    hb = Heartbeat(clock, 3.0)
    log: list[tuple[str, float]] = []
    hb.add(Sock("bad", log, clock))
    hb.add(Sock("good", log, clock))
    for _ in range(10):
        clock.advance(1)
    assert [n for n, _ in log] == ["bad", "good", "good", "good"]


class JumpClock(ManualClock):
    """Monotonic time set by the test; timers are only recorded (the test runs the tick)."""

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Timer:
        self.tick = fn
        return super().call_later(seconds, lambda: None)


def test_a_clock_jump_checks_every_overdue_socket_once() -> None:
    clock = JumpClock()
    hb = Heartbeat(clock, 20.0)
    log: list[tuple[str, float]] = []
    for i in range(5):
        hb.add(Sock(f"s{i}", log, clock))
        clock._mono += 3
    clock._mono += 10_000  # the process was suspended: one tick finds every slot overdue
    clock.tick()
    assert sorted(n for n, _ in log) == ["s0", "s1", "s2", "s3", "s4"]
    assert len(hb) == 5  # each due again an interval from now, not 500 times at once


def test_stop_cancels_the_timer() -> None:
    clock = ManualClock()
    hb = Heartbeat(clock, 2.0)
    log: list[tuple[str, float]] = []
    hb.add(Sock("x", log, clock))
    hb.stop()
    clock.advance(10)
    assert log == [] and clock.pending == 0
