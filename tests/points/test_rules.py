"""The built-in rules hook (chatd/points/rules.py): TOML parsed into rules or
refused naming the rule at fault; events turned into awards."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from chatd.points.model import Award, Event
from chatd.points.rules import DEFAULT_RULES, Rule, RulesHook, parse_rules


def event(kind: str = "message.sent", user: str = "alice", key: str = "k1", day: str = "2026-11-23", **data: Any) -> Event:
    return Event(kind, key, user, "c:1", 1_763_900_000_000, day, data)


def rules(toml: str) -> list[Rule]:
    return parse_rules(textwrap.dedent(toml))


# -- parsing -----------------------------------------------------------------


def test_a_full_rule_parses_with_every_field() -> None:
    (rule,) = rules("""
        [rules.upvoted]
        on = "question.upvoted"
        currency = "cv"
        amount = 3
        daily_cap = 50
        first_of_day = true
        conv_kinds = ["circle", "service"]
        to = "target"
    """)
    assert rule == Rule("upvoted", "question.upvoted", "cv", 3, 50, True, ("circle", "service"), "target")


def test_defaults_of_the_optional_fields() -> None:
    (rule,) = rules('[rules.post]\non = "message.sent"\ncurrency = "points"\namount = 1\n')
    assert rule == Rule("post", "message.sent", "points", 1, None, False, (), "actor")


def test_the_default_rules_parse() -> None:
    names = [r.name for r in parse_rules(DEFAULT_RULES)]
    assert names[:3] == ["checkin", "post", "chat"]
    assert [r.name for r in RulesHook().rules] == names


def test_no_rules_table_is_no_rules() -> None:
    assert parse_rules("") == []
    assert RulesHook([])(event()) == []


BAD = [
    ('on = "message.sent"\ncurrency = "points"\namount = 1\nbonus = 2', "bonus", "unknown field(s) bonus"),
    ('on = "message.sent"\ncurrency = "gold"\namount = 1', "currency", "currency must be one of points, cv"),
    ('on = "message.sent"\ncurrency = "points"\namount = -1', "amount", "amount must be a positive integer"),
    ('on = "message.sent"\ncurrency = "points"\namount = 0', "amount", "amount must be a positive integer"),
    ('on = "message.sent"\ncurrency = "points"\namount = 1.5', "amount", "amount must be a positive integer"),
    ('on = "message.sent"\ncurrency = "points"\namount = true', "amount", "amount must be a positive integer"),
    ('on = "message.sent"\ncurrency = "points"\namount = 1\ndaily_cap = 0', "cap", "daily_cap must be a positive"),
    ('on = "message.sent"\ncurrency = "points"\namount = 1\ndaily_cap = "5"', "cap", "daily_cap must be a positive"),
    ('on = "message.sent"\ncurrency = "points"\namount = 1\ndaily_cap = false', "cap", "daily_cap must be"),
    ('on = "message.sent"\ncurrency = "points"\namount = 1\nconv_kinds = "circle"', "kinds", "conv_kinds must be a list"),
    ('on = "message.sent"\ncurrency = "points"\namount = 1\nconv_kinds = [1]', "kinds", "conv_kinds must be a list"),
    ('on = "message.sent"\ncurrency = "points"\namount = 1\nto = "owner"', "to", "'to' must be 'actor' or 'target'"),
    ('currency = "points"\namount = 1', "on", "'on' must name an event kind"),
    ('on = ""\ncurrency = "points"\namount = 1', "on", "'on' must name an event kind"),
]


@pytest.mark.parametrize(("body", "_id", "message"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_a_bad_rule_is_refused_naming_it(body: str, _id: str, message: str) -> None:
    good = '[rules.fine]\non = "x"\ncurrency = "cv"\namount = 1\n'
    with pytest.raises(ValueError, match="points rule broken: ") as info:
        parse_rules(good + "[rules.broken]\n" + body + "\n")
    assert message in str(info.value)


def test_a_rule_that_is_not_a_table_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="points rule checkin: must be a table"):
        parse_rules('[rules]\ncheckin = 5\n')


def test_bad_toml_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^points rules: "):
        parse_rules("[rules.x\non = ")


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[rules.only]\non = "circle.joined"\ncurrency = "points"\namount = 4\n')
    hook = RulesHook.from_file(path)
    assert hook(event("circle.joined")) == [Award("alice", "points", 4, "only", "only:k1", None, "2026-11-23", "k1")]
    assert hook(event("message.sent")) == []


# -- awarding ------------------------------------------------------------------


def test_an_event_gets_one_award_per_matching_rule_keyed_by_rule_and_event() -> None:
    hook = RulesHook(rules("""
        [rules.a]
        on = "message.sent"
        currency = "points"
        amount = 2
        [rules.b]
        on = "message.sent"
        currency = "cv"
        amount = 1
        daily_cap = 20
        [rules.other]
        on = "circle.joined"
        currency = "points"
        amount = 9
    """))
    got = hook(event(key="message.sent:c:1:7"))
    assert got == [
        Award("alice", "points", 2, "a", "a:message.sent:c:1:7", None, "2026-11-23", "message.sent:c:1:7"),
        Award("alice", "cv", 1, "b", "b:message.sent:c:1:7", 20, "2026-11-23", "message.sent:c:1:7"),
    ]


def test_first_of_day_is_keyed_by_user_and_day_so_the_ledger_keeps_one() -> None:
    hook = RulesHook(rules('[rules.checkin]\non = "message.sent"\nfirst_of_day = true\ncurrency = "points"\namount = 5\n'))
    first = hook(event(key="e1"))
    second = hook(event(key="e2"))
    next_day = hook(event(key="e3", day="2026-11-24"))
    bob = hook(event(key="e4", user="bob"))
    assert [a.key for a in first] == [a.key for a in second] == ["checkin:alice:2026-11-23"]
    assert [a.key for a in next_day] == ["checkin:alice:2026-11-24"]
    assert [a.key for a in bob] == ["checkin:bob:2026-11-23"]
    assert first[0].ref == "e1" and second[0].ref == "e2"


def test_the_daily_cap_and_day_travel_with_every_award() -> None:
    # the ledger counts against the cap per user, rule and day; the hook passes both on
    hook = RulesHook(rules('[rules.post]\non = "message.sent"\ncurrency = "cv"\namount = 1\ndaily_cap = 2\n'))
    awards = [a for i in range(5) for a in hook(event(key=f"e{i}"))]
    assert len(awards) == 5
    assert {(a.daily_cap, a.day) for a in awards} == {(2, "2026-11-23")}
    assert len({a.key for a in awards}) == 5


def test_conv_kinds_filters_by_the_events_conversation_kind() -> None:
    hook = RulesHook(rules('[rules.post]\non = "message.sent"\nconv_kinds = ["circle"]\ncurrency = "cv"\namount = 1\n'))
    assert [a.rule for a in hook(event(conv_kind="circle"))] == ["post"]
    assert hook(event(conv_kind="dm")) == []
    assert hook(event()) == []  # no kind known: not a circle


def test_the_default_rules_split_circles_from_dms() -> None:
    hook = RulesHook()
    in_circle = {a.rule for a in hook(event(conv_kind="circle"))}
    in_dm = {a.rule for a in hook(event(conv_kind="dm"))}
    assert in_circle == {"checkin", "post"}
    assert in_dm == {"checkin", "chat"}


def test_to_target_awards_the_events_target() -> None:
    hook = RulesHook(rules('[rules.upvoted]\non = "question.upvoted"\nto = "target"\ncurrency = "cv"\namount = 1\n'))
    (award,) = hook(event("question.upvoted", user="voter", target="author"))
    assert (award.user, award.key) == ("author", "upvoted:k1")
    # no target named (or not a user id string): nobody is awarded
    assert hook(event("question.upvoted", user="voter")) == []
    assert hook(event("question.upvoted", user="voter", target=7)) == []
