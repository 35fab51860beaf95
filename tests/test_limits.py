"""TokenBucket as a pure function of an explicit ``now``."""

from __future__ import annotations

import pytest

from chatd.limits import TokenBucket


def test_burst_then_refused() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [b.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = b.take(100.0)
    assert wait == pytest.approx(0.5)  # one token at 2/s
    # a refusal costs nothing: asking again at the same instant gives the same wait
    assert b.take(100.0) == pytest.approx(0.5)


def test_refills_at_rate_and_caps_at_burst() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    for _ in range(3):
        assert b.take(0.0) == 0.0
    assert b.take(0.25) == pytest.approx(0.25)  # half a token there, half to go
    assert b.take(0.5) == 0.0
    assert b.take(0.5) > 0
    # a long idle period refills to burst, not beyond
    assert [b.take(1000.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(1000.0) > 0


def test_sustained_rate() -> None:
    b = TokenBucket(rate=8.0, burst=1, now=0.0)
    # 64/s offered for 8 s (binary-exact steps): 8/s pass, plus the initial burst
    allowed = sum(1 for i in range(512) if b.take(i / 64) == 0.0)
    assert allowed == 64


def test_clock_going_backwards_does_not_mint_tokens() -> None:
    b = TokenBucket(rate=1.0, burst=1, now=50.0)
    assert b.take(50.0) == 0.0
    assert b.take(10.0) > 0
    assert b.take(49.0) > 0
    assert b.take(51.0) == 0.0


def test_cost_larger_than_one() -> None:
    b = TokenBucket(rate=1.0, burst=5, now=0.0)
    assert b.take(0.0, cost=5) == 0.0
    assert b.take(0.0, cost=2) == pytest.approx(2.0)
