"""Conversation kinds: the interface (``base.py``) and its implementations,
``dm`` and ``circle`` (``service`` and ``live`` next), gathered in a registry."""

from __future__ import annotations

from collections.abc import Iterator

from .base import ConversationKind, ConvState, Delivery, Membership
from .circle import Circle
from .dm import Direct


class Kinds:
    """The kinds a server knows, by name (as stored with each conversation)."""

    def __init__(self, *kinds: ConversationKind) -> None:
        self._by_name = {k.name: k for k in kinds}
        self.dm = next(k for k in kinds if isinstance(k, Direct))
        self.circle = next(k for k in kinds if isinstance(k, Circle))

    def __getitem__(self, name: str) -> ConversationKind:
        return self._by_name[name]

    def __iter__(self) -> Iterator[ConversationKind]:
        return iter(self._by_name.values())

    def of(self, conv: str) -> ConversationKind | None:
        """The kind a conversation id belongs to, from its prefix."""
        return next((k for k in self._by_name.values() if k.owns(conv)), None)


def default_kinds() -> Kinds:
    return Kinds(Direct(), Circle())


__all__ = ["Circle", "ConvState", "ConversationKind", "Delivery", "Direct", "Kinds", "Membership", "default_kinds"]
