"""Points: hooks that turn interaction events into awards (exactly once), the
built-in rules, the worker, tips and red packets. See docs/points.md."""

from .model import Award, Event, PointsHook

__all__ = ["Award", "Event", "PointsHook"]
