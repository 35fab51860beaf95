"""The service-group policy: response targets, working hours, escalation,
episodes and ratings (docs/service-groups.md, "Response clocks").

A deployment writes it in TOML (``--service-policy FILE``, a ``[service]``
table); every key has a default, and an unknown key, a wrong type or a value
out of range refuses the file with the key's name. Pure logic: a due time is a
function of the time the customer started waiting, nothing else, so the clocks
need no timers (the overdue scan compares due times with the clock).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MINUTE_MS = 60_000
DAY_MS = 86_400_000
_HOURS_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


MILLION = 1_000_000
FELLOW_SHARE = 400_000  # the Fellow's accountable share of every rating, replies or not


def credit(fellow: str, replies: dict[str, int]) -> dict[str, int]:
    """A rating's credit in integer millionths, summing to exactly 1,000,000:
    the accountable Fellow gets 0.4; the other 0.6 is split by share of staff
    replies in the episode (the Fellow's included), rounded down; what the
    rounding leaves goes to the Fellow. No staff reply: the Fellow gets all."""
    total = sum(replies.values())
    if total <= 0:
        return {fellow: MILLION}
    rest = MILLION - FELLOW_SHARE
    out = {user: rest * n // total for user, n in replies.items() if n > 0}
    out[fellow] = out.get(fellow, 0) + FELLOW_SHARE
    out[fellow] += MILLION - sum(out.values())
    return out


def nearest_rank(values: list[int], q: int) -> int | None:
    """The ``q``-th percentile (1-100) of integer ``values`` by the nearest-rank
    method: a value that occurred, the same on every run (no interpolation)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = -(-q * len(ordered) // 100)  # ceil(q * n / 100)
    return ordered[max(rank, 1) - 1]


REPORT_COLUMNS = (
    "user", "episodes", "ratings", "stars_sum", "stars_avg", "credit_millionths", "credit", "replies",
    "responses", "first_responses", "first_response_p50_ms", "first_response_p90_ms", "response_p50_ms",
    "response_p90_ms", "breaches", "closed_waiting",
)


@dataclass(slots=True)
class _Person:
    episodes: int = 0
    ratings: int = 0
    stars_sum: int = 0
    credit: int = 0
    replies: int = 0
    breaches: int = 0
    closed_waiting: int = 0
    waits: list[int] = field(default_factory=list)
    firsts: list[int] = field(default_factory=list)


def report_rows(
    episodes: list[tuple[str, int | None]],
    credit: dict[str, int],
    replies: list[tuple[str, int | None, int, int]],
    key: str = "user",
    closes: Sequence[tuple[str, int, int]] = (),
) -> list[dict[str, Any]]:
    """Per person (``key`` "user") or per group ("conv"), from stored rows only
    (docs/service-groups.md, "Reports"): ``episodes`` (accountable Fellow or group,
    stars or None) of the episodes closed in the period, the summed ``credit`` for
    them, and ``replies`` (user or group, ms the customer had waited or None, late,
    first) sent in the period; ``closes`` (who closed, ms waited, late): episodes
    closed on a waiting customer, unanswered, a breach if it was overdue."""
    people: dict[str, _Person] = {}
    for fellow, stars in episodes:
        p = people.setdefault(fellow, _Person())
        p.episodes += 1
        if stars is not None:
            p.ratings += 1
            p.stars_sum += stars
    for user, share in credit.items():
        people.setdefault(user, _Person()).credit = share
    for user, waited, late, first in replies:
        p = people.setdefault(user, _Person())
        p.replies += 1
        if waited is not None:
            p.breaches += late
            p.waits.append(waited)
            if first:
                p.firsts.append(waited)
    for user, _waited, late in closes:  # closed on a waiting customer, unanswered
        p = people.setdefault(user, _Person())
        p.closed_waiting += 1
        p.breaches += late
    out = []
    for user in sorted(people):
        p = people[user]
        # the average as an exact decimal string: 2 places, rounded half up, from the integers
        cents = (p.stars_sum * 200 + p.ratings) // (2 * p.ratings) if p.ratings else 0
        avg = f"{cents // 100}.{cents % 100:02d}" if p.ratings else None
        out.append({
            key: user, "episodes": p.episodes, "ratings": p.ratings, "stars_sum": p.stars_sum, "stars_avg": avg,
            "credit_millionths": p.credit, "credit": f"{p.credit // MILLION}.{p.credit % MILLION:06d}",
            "replies": p.replies, "responses": len(p.waits), "first_responses": len(p.firsts),
            "first_response_p50_ms": nearest_rank(p.firsts, 50), "first_response_p90_ms": nearest_rank(p.firsts, 90),
            "response_p50_ms": nearest_rank(p.waits, 50), "response_p90_ms": nearest_rank(p.waits, 90),
            "breaches": p.breaches, "closed_waiting": p.closed_waiting,
        })
    return out


class PolicyError(ValueError):
    """The policy file is refused; the message names the key."""


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    first_response_s: int = 300  # a customer's first message of an episode, in working hours
    urgent_response_s: int = 120  # while a rescue (urgent) request is open, at any hour
    next_response_s: int = 600  # a customer's message after a staff reply in the episode
    off_hours_response_s: int = 1800  # first or next, outside working hours
    working_hours: str = "08:00-22:00"  # local time, [start, end)
    working_days: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)  # ISO weekdays (1 Monday)
    utc_offset_min: int = 480  # the deployment's local time (China: UTC+8)
    bot_reply_stops_clock: bool = False  # a bot's reply answers the customer for the clock
    escalate_after_s: int = 600  # past the due time, the overdue alert goes on to...
    escalate_badge: str = "supervisor"  # ...the group's staff carrying this badge
    episode_idle_s: int = 86_400  # an open episode with no message this long closes
    bot_quiet_s: int = 600  # bots' claims are refused this long after a staff reply
    rating_window_s: int = 7 * 86_400  # the owner rates a closed episode within this

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("first_response_s", 1, 7 * 86_400),
            ("urgent_response_s", 1, 7 * 86_400),
            ("next_response_s", 1, 7 * 86_400),
            ("off_hours_response_s", 1, 7 * 86_400),
            ("utc_offset_min", -720, 840),
            ("escalate_after_s", 1, 7 * 86_400),
            ("episode_idle_s", 60, 90 * 86_400),
            ("bot_quiet_s", 0, 86_400),
            ("rating_window_s", 60, 90 * 86_400),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise PolicyError(f"service.{name} must be an integer in [{lo}, {hi}]")
        if not isinstance(self.bot_reply_stops_clock, bool):
            raise PolicyError("service.bot_reply_stops_clock must be true or false")
        if not isinstance(self.working_hours, str) or not _HOURS_RE.fullmatch(self.working_hours):
            raise PolicyError('service.working_hours must be "HH:MM-HH:MM" (24-hour, local time)')
        start, end = self.hours
        if start >= end:
            raise PolicyError("service.working_hours must end after it starts (overnight shifts: two policies)")
        days = self.working_days
        if (
            not isinstance(days, tuple)
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7 for d in days)
            or len(set(days)) != len(days)
        ):
            raise PolicyError("service.working_days must be a list of distinct ISO weekdays (1-7)")
        if not isinstance(self.escalate_badge, str) or not 1 <= len(self.escalate_badge) <= 32:
            raise PolicyError("service.escalate_badge must be a string of 1-32 characters")

    @property
    def hours(self) -> tuple[int, int]:
        """Working hours as minutes of the local day, [start, end)."""
        m = _HOURS_RE.fullmatch(self.working_hours)
        assert m is not None
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        return h1 * 60 + m1, h2 * 60 + m2

    def working(self, ts_ms: int) -> bool:
        """Whether ``ts_ms`` (unix ms) falls in working hours, local time."""
        local = ts_ms + self.utc_offset_min * MINUTE_MS
        days = local // DAY_MS
        weekday = (days + 3) % 7 + 1  # 1970-01-01 was a Thursday (ISO 4)
        minute = (local % DAY_MS) // MINUTE_MS
        start, end = self.hours
        return weekday in self.working_days and start <= minute < end

    def target_s(self, since_ms: int, urgent: bool, answered: bool) -> int:
        """The response target for a customer waiting since ``since_ms``: urgent at
        any hour; else first or next response in working hours, the off-hours
        target outside them."""
        if urgent:
            return self.urgent_response_s
        if not self.working(since_ms):
            return self.off_hours_response_s
        return self.next_response_s if answered else self.first_response_s

    def due(self, since_ms: int, urgent: bool, answered: bool) -> int:
        return since_ms + self.target_s(since_ms, urgent, answered) * 1000

    @classmethod
    def from_toml(cls, text: str) -> ServicePolicy:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"not TOML: {exc}") from None
        extra = set(doc) - {"service"}
        if extra:
            raise PolicyError(f"unknown table or key {sorted(extra)[0]!r} (the policy is the [service] table)")
        table = doc.get("service", {})
        if not isinstance(table, dict):
            raise PolicyError("service must be a table")
        known = {f.name for f in fields(cls)}
        for key in table:
            if key not in known:
                raise PolicyError(f"unknown key service.{key}")
        values: dict[str, Any] = dict(table)
        if "working_days" in values:
            days = values["working_days"]
            if not isinstance(days, list):
                raise PolicyError("service.working_days must be a list of distinct ISO weekdays (1-7)")
            values["working_days"] = tuple(days)
        return cls(**values)

    @classmethod
    def from_file(cls, path: str) -> ServicePolicy:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read {path}: {exc}") from None
        return cls.from_toml(text)


def report_csv(rows: list[dict[str, Any]], key: str = "user") -> str:
    """The report as CSV (RFC 4180, a header line, ``\r\n`` line ends)."""
    import csv
    import io

    columns = (key, *REPORT_COLUMNS[1:])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r[k]) for k in columns})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    """A CSV cell: none is empty; a text a spreadsheet would run as a formula
    (``=``, ``+``, ``-``, ``@`` first) gets a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value
