"""The service policy (TOML) and the credit rule: pure logic."""

from __future__ import annotations

import itertools
import random

import pytest

from chatd.policy import MILLION, PolicyError, ServicePolicy, credit

# 2025-11-24 is a Monday; 00:00 in Shanghai (UTC+8) is 16:00 UTC the day before
MONDAY_0000_CST = 1_763_913_600_000


def at(day: int, hh: int, mm: int = 0) -> int:
    return MONDAY_0000_CST + day * 86_400_000 + (hh * 60 + mm) * 60_000


def test_defaults_and_working_hours() -> None:
    p = ServicePolicy()
    assert p.working(at(0, 8)) and p.working(at(0, 21, 59)) and not p.working(at(0, 22)) and not p.working(at(0, 7, 59))
    assert p.due(at(0, 10), urgent=False, answered=False) == at(0, 10, 5)
    assert p.due(at(0, 10), urgent=False, answered=True) == at(0, 10, 10)
    assert p.due(at(0, 23), urgent=False, answered=False) == at(0, 23, 30)  # off hours
    assert p.due(at(0, 23), urgent=True, answered=False) == at(0, 23, 2)  # urgent at any hour


def test_working_days_and_offset() -> None:
    p = ServicePolicy(working_days=(1, 2, 3, 4, 5), utc_offset_min=0, working_hours="09:00-17:00")
    monday_10_utc = MONDAY_0000_CST + 18 * 3_600_000  # 2025-11-24 10:00 UTC
    assert p.working(monday_10_utc)
    assert not p.working(monday_10_utc + 5 * 86_400_000)  # Saturday
    assert not p.working(monday_10_utc + 8 * 3_600_000)  # 18:00


def test_the_policy_file_is_read_and_every_key_is_checked() -> None:
    p = ServicePolicy.from_toml('[service]\nfirst_response_s = 60\nworking_days = [1, 2]\nbot_reply_stops_clock = true\n')
    assert (p.first_response_s, p.working_days, p.bot_reply_stops_clock) == (60, (1, 2), True)
    assert ServicePolicy.from_toml("") == ServicePolicy()
    for text, key in (
        ("[service]\nfirst_response_s = 0\n", "first_response_s"),
        ("[service]\nfirst_response_s = '5'\n", "first_response_s"),
        ("[service]\nfirst_response_s = true\n", "first_response_s"),
        ("[service]\nfirst_response_s = 99999999999\n", "first_response_s"),
        ("[service]\nbot_reply_stops_clock = 1\n", "bot_reply_stops_clock"),
        ('[service]\nworking_hours = "8-22"\n', "working_hours"),
        ('[service]\nworking_hours = "22:00-08:00"\n', "working_hours"),
        ('[service]\nworking_hours = 8\n', "working_hours"),
        ("[service]\nworking_days = [0]\n", "working_days"),
        ("[service]\nworking_days = [1, 1]\n", "working_days"),
        ("[service]\nworking_days = 1\n", "working_days"),
        ('[service]\nescalate_badge = ""\n', "escalate_badge"),
        ("[service]\nutc_offset_min = 900\n", "utc_offset_min"),
        ("[service]\nspeed = 1\n", "service.speed"),
        ("[other]\nx = 1\n", "other"),
        ("service = 1\n", "service"),
        ("[service\n", "not TOML"),
    ):
        with pytest.raises(PolicyError, match=key):
            ServicePolicy.from_toml(text)


def test_a_missing_or_unreadable_policy_file_is_refused(tmp_path: object) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        ServicePolicy.from_file("/nonexistent/policy.toml")


def test_credit_follows_the_rule() -> None:
    assert credit("f", {}) == {"f": MILLION}
    assert credit("f", {"f": 1}) == {"f": MILLION}
    assert credit("f", {"a": 1}) == {"f": 400_000, "a": 600_000}
    assert credit("f", {"f": 1, "a": 3}) == {"f": 550_000, "a": 450_000}
    # 600,000 / 7 leaves a remainder: it goes to the Fellow
    got = credit("f", {"a": 1, "b": 2, "c": 4})
    assert got == {"a": 85_714, "b": 171_428, "c": 342_857, "f": 400_001}


def test_credit_always_sums_to_exactly_one_million() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        staff = [f"s{i}" for i in range(rng.randint(0, 12))]
        replies = {u: rng.randint(0, 50) for u in itertools.chain(staff, ["f"] if rng.random() < 0.5 else [])}
        shares = credit("f", replies)
        assert sum(shares.values()) == MILLION and all(v >= 0 for v in shares.values())
        assert shares["f"] >= 400_000


def test_nearest_rank_is_a_value_that_occurred() -> None:
    from chatd.policy import nearest_rank

    values = [50, 10, 40, 20, 30]
    assert [nearest_rank(values, q) for q in (1, 20, 21, 50, 90, 100)] == [10, 10, 20, 30, 50, 50]
    assert nearest_rank([7], 90) == 7 and nearest_rank([], 50) is None
    assert nearest_rank(list(range(1, 11)), 90) == 9  # ceil(0.9 x 10) = 9th


def test_report_rows_count_round_half_up_and_record_unanswered_closes() -> None:
    from chatd.policy import report_csv, report_rows

    rows = report_rows(
        episodes=[("f", 5), ("f", 4), ("f", 4), ("f", None), ("g", 3)],
        credit={"f": 2_500_001, "e": 499_999},
        replies=[("e", 60_000, 0, 1), ("e", 120_000, 1, 0), ("e", None, 0, 0), ("f", 400_000, 1, 1)],
        closes=[("f", 900_000, 1), ("e", 10_000, 0)],
    )
    by = {r["user"]: r for r in rows}
    assert [r["user"] for r in rows] == ["e", "f", "g"]
    f, e, g = by["f"], by["e"], by["g"]
    assert (f["episodes"], f["ratings"], f["stars_sum"], f["stars_avg"]) == (4, 3, 13, "4.33")
    assert g["stars_avg"] == "3.00" and e["stars_avg"] is None
    assert report_rows([("h", 4), ("h", 5)], {}, [])[0]["stars_avg"] == "4.50"
    assert report_rows([("h", 4), ("h", 4), ("h", 5)], {}, [])[0]["stars_avg"] == "4.33"
    assert report_rows([("h", 5)] * 2 + [("h", 4)] * 6, {}, [])[0]["stars_avg"] == "4.25"
    assert report_rows([("h", 5), ("h", 4), ("h", 4), ("h", 4), ("h", 4), ("h", 4), ("h", 4), ("h", 4)],
                       {}, [])[0]["stars_avg"] == "4.13"  # 4.125 rounds half up
    assert (f["credit"], e["credit"]) == ("2.500001", "0.499999")
    assert (e["replies"], e["responses"], e["first_responses"], e["response_p50_ms"], e["response_p90_ms"],
            e["first_response_p50_ms"]) == (3, 2, 1, 60_000, 120_000, 60_000)
    assert (e["breaches"], e["closed_waiting"], f["breaches"], f["closed_waiting"]) == (1, 1, 2, 1)
    text = report_csv(report_rows([("=cmd", 5)], {}, []))
    assert text.splitlines()[1].startswith("'=cmd,1,1,5,5.00")  # no formula reaches a spreadsheet
