"""The community's calendar day of an event (daily caps and check-ins hang on it)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chatd.core.outbox import day_of


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("utc", "offset", "day"),
    [
        ("2026-11-23T15:59:59.999", 8, "2026-11-23"),  # 23:59:59.999 in Beijing
        ("2026-11-23T16:00:00.000", 8, "2026-11-24"),  # midnight in Beijing
        ("2026-11-23T00:00:00.000", 0, "2026-11-23"),
        ("2026-11-22T23:59:59.999", 0, "2026-11-22"),
        ("2026-11-23T04:59:59.999", -5, "2026-11-22"),
        ("2026-11-23T05:00:00.000", -5, "2026-11-23"),
        ("2028-02-28T16:00:00.000", 8, "2028-02-29"),  # leap day
        ("1970-01-01T00:00:00.000", 0, "1970-01-01"),
    ],
)
def test_day_boundaries(utc: str, offset: int, day: str) -> None:
    assert day_of(ms(utc), offset) == day


def test_same_day_twice_is_the_same_answer() -> None:
    t = ms("2026-11-23T10:00:00")
    assert day_of(t, 8) == day_of(t + 3_600_000, 8) == "2026-11-23"
