"""The hook interface: what a points hook receives and what it returns.

A hook is any callable ``hook(event) -> Iterable[Award]`` (or an ``async def``
returning one), with an optional ``name`` attribute (its cursor in the store is
kept under that name; default: ``module:qualname``). Register one by Python
entry point (group ``chatd.points_hooks``) or with ``chatd serve --points-hook
module:attr``. docs/points.md has a worked example.

A hook may be called more than once for one event (after a crash, or a retry):
awards are applied once because an award's ``key`` is its ledger entry's id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..core import hooks
from ..core.outbox import Event

__all__ = ["Award", "Event", "PointsHook", "entry_point_hooks", "hook_name", "load_ref"]

POINTS = "points"  # a currency: spendable, 100 points = 10 yuan
CV = "cv"  # contribution value: ranks users, never spendable
CURRENCIES = (POINTS, CV)

ENTRY_POINT_GROUP = "chatd.points_hooks"


@dataclass(frozen=True, slots=True)
class Award:
    """``amount`` of ``currency`` to ``user`` under ``rule``, applied once per ``key``.

    ``daily_cap``: at most that many non-zero awards of this rule per user and day;
    past it the award is recorded with amount 0 and a note (the audit trail)."""

    user: str
    currency: str
    amount: int
    rule: str
    key: str
    daily_cap: int | None = None
    day: str = ""
    ref: str = ""


@runtime_checkable
class PointsHook(Protocol):
    def __call__(self, event: Event) -> Iterable[Award] | Awaitable[Iterable[Award]]: ...


def hook_name(hook: Any) -> str:
    return hooks.hook_name(hook)


def load_ref(ref: str) -> Any:
    """``module:attr`` -> the hook (``chatd.core.hooks.load_ref``)."""
    return hooks.load_ref(ref, "points hook")


def entry_point_hooks() -> list[Any]:
    return hooks.entry_point_hooks(ENTRY_POINT_GROUP)
