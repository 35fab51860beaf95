"""Points (DESIGN.md §6): interaction events, hooks that turn them into awards,
an append-only ledger, tips and red packets. See docs/points.md."""

from .model import Award, Event, PointsHook

__all__ = ["Award", "Event", "PointsHook"]
