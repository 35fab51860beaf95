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

import importlib
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from ..core.outbox import Event

__all__ = ["Award", "Event", "PointsHook", "entry_point_hooks", "hook_name", "load_ref"]

log = logging.getLogger("chatd.points")

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
    name = getattr(hook, "name", None)
    if isinstance(name, str) and name:
        return name
    target = hook if callable(hook) and hasattr(hook, "__qualname__") else type(hook)
    return f"{target.__module__}:{target.__qualname__}"


def load_ref(ref: str) -> Any:
    """``module:attr`` -> the object. A class or factory is called with no
    arguments when the attribute is not itself a hook instance."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ValueError(f"points hook {ref!r}: expected module:attr")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"points hook {ref!r} is not callable")
    return obj


def entry_point_hooks() -> list[Any]:
    hooks = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            hooks.append(obj() if isinstance(obj, type) else obj)
        except Exception:
            log.exception("points hook entry point %s failed to load; skipped", ep.name)
    return hooks
