"""The points side of calling hooks (``chatd/core/hooks.py`` calls them): a
points hook returns awards, and an award it returns is checked before it is
applied (an invalid one counts as the hook failing on that event)."""

from __future__ import annotations

from typing import Any

from ..core.hooks import HookState, call
from .model import Award

__all__ = ["HookState", "call", "valid"]


def valid(a: Any) -> bool:
    return (
        isinstance(a, Award)
        and a.currency in ("points", "cv")
        and isinstance(a.amount, int)
        and not isinstance(a.amount, bool)
        and a.amount >= 0
        and isinstance(a.key, str)
        and 0 < len(a.key) <= 200
        and isinstance(a.user, str)
        and bool(a.user)
    )
