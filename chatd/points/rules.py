"""The built-in rules hook: the community's earning rules, configured in TOML.

A rule awards ``amount`` of ``currency`` for events of kind ``on``, at most
``daily_cap`` times per user and day (an award past the cap is recorded with 0
points and a note). ``first_of_day = true`` makes a rule fire on the user's first
such event of the day only (the daily check-in). ``conv_kinds`` restricts it to
conversations of those kinds. ``to = "target"`` awards the event's target user
(e.g. the author of an upvoted question) instead of its actor.

Defaults (``DEFAULT_RULES``), a file given with ``--points-rules`` replaces them:
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import CURRENCIES, Award, Event

DEFAULT_RULES = """
# first message of the day: the daily check-in
[rules.checkin]
on = "message.sent"
first_of_day = true
currency = "points"
amount = 5

[rules.post]
on = "message.sent"
conv_kinds = ["circle"]
currency = "cv"
amount = 1
daily_cap = 20

[rules.chat]
on = "message.sent"
conv_kinds = ["dm", "service"]
currency = "cv"
amount = 1
daily_cap = 5

[rules.join_circle]
on = "circle.joined"
currency = "points"
amount = 2
daily_cap = 3

[rules.question]
on = "question.asked"
currency = "points"
amount = 5
daily_cap = 3

[rules.upvoted]
on = "question.upvoted"
to = "target"
currency = "cv"
amount = 1
daily_cap = 50

[rules.answered]
on = "question.answered"
currency = "cv"
amount = 10

[rules.rating]
on = "service.rated"
currency = "points"
amount = 10
daily_cap = 1

[rules.poll]
on = "poll.voted"
currency = "points"
amount = 1
daily_cap = 5

[rules.live]
on = "live.attended"
currency = "points"
amount = 2
daily_cap = 1
"""

__doc__ = (__doc__ or "") + "\n```toml" + DEFAULT_RULES + "```\n"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    on: str
    currency: str
    amount: int
    daily_cap: int | None = None
    first_of_day: bool = False
    conv_kinds: tuple[str, ...] = ()
    to: str = "actor"


def parse_rules(text: str) -> list[Rule]:
    """Rules from TOML; ValueError naming the rule and field that is wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"points rules: {exc}") from exc
    rules = []
    for name, spec in (doc.get("rules") or {}).items():
        if not isinstance(spec, dict):
            raise ValueError(f"points rule {name}: must be a table")
        unknown = set(spec) - {"on", "currency", "amount", "daily_cap", "first_of_day", "conv_kinds", "to"}
        if unknown:
            raise ValueError(f"points rule {name}: unknown field(s) {', '.join(sorted(unknown))}")
        on, currency, amount = spec.get("on"), spec.get("currency"), spec.get("amount")
        cap = spec.get("daily_cap")
        if not isinstance(on, str) or not on:
            raise ValueError(f"points rule {name}: 'on' must name an event kind")
        if currency not in CURRENCIES:
            raise ValueError(f"points rule {name}: currency must be one of {', '.join(CURRENCIES)}")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ValueError(f"points rule {name}: amount must be a positive integer")
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise ValueError(f"points rule {name}: daily_cap must be a positive integer")
        to = spec.get("to", "actor")
        if to not in ("actor", "target"):
            raise ValueError(f"points rule {name}: 'to' must be 'actor' or 'target'")
        kinds = spec.get("conv_kinds", [])
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise ValueError(f"points rule {name}: conv_kinds must be a list of strings")
        rules.append(
            Rule(name, on, currency, amount, cap, bool(spec.get("first_of_day", False)), tuple(kinds), to)
        )
    return rules


class RulesHook:
    """``RulesHook()`` has the defaults; ``RulesHook.from_file(path)`` a deployment's rules."""

    name = "rules"
    inline = True  # pure and fast: run on the worker's loop, not in a thread

    def __init__(self, rules: Iterable[Rule] | None = None) -> None:
        self.rules = list(rules) if rules is not None else parse_rules(DEFAULT_RULES)
        self.by_kind: dict[str, list[Rule]] = {}
        for rule in self.rules:
            self.by_kind.setdefault(rule.on, []).append(rule)

    @classmethod
    def from_file(cls, path: str | Path) -> RulesHook:
        return cls(parse_rules(Path(path).read_text()))

    def __call__(self, event: Event) -> list[Award]:
        awards = []
        for rule in self.by_kind.get(event.kind, ()):
            if rule.conv_kinds and event.data.get("conv_kind") not in rule.conv_kinds:
                continue
            user = event.user
            if rule.to == "target":
                target: Any = event.data.get("target")
                if not isinstance(target, str):
                    continue
                user = target
            if rule.first_of_day:
                # one key per user and day: the ledger keeps the first, ignores the rest
                key = f"{rule.name}:{user}:{event.day}"
            else:
                key = f"{rule.name}:{event.key}"
            awards.append(
                Award(user, rule.currency, rule.amount, rule.name, key, rule.daily_cap, event.day, event.key)
            )
        return awards
