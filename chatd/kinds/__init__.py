"""Conversation kinds: the interface (``base.py``) and its implementations,
``dm``, ``circle``, ``service`` and ``live``, gathered in a registry."""

from __future__ import annotations

from collections.abc import Iterator

from ..policy import ServicePolicy
from .base import ConversationKind, ConvState, Delivery, Membership
from .circle import Circle
from .dm import Direct
from .live import Live
from .service import Service


class Kinds:
    """The kinds a server knows, by name (as stored with each conversation)."""

    def __init__(self, *kinds: ConversationKind) -> None:
        for k in kinds:
            # what the core delivers today: a topic per conversation, and a snapshot then
            # a topic for ephemeral viewers (chatd/core/live.py)
            if k.delivery is Delivery.COALESCED or (
                k.delivery is Delivery.SNAPSHOT_THEN_TOPIC and k.membership is not Membership.EPHEMERAL
            ):
                raise ValueError(f"kind {k.name}: delivery {k.delivery.value} is not built yet")
        self._by_name = {k.name: k for k in kinds}
        self.dm = next(k for k in kinds if isinstance(k, Direct))
        self.circle = next(k for k in kinds if isinstance(k, Circle))
        self.service = next(k for k in kinds if isinstance(k, Service))
        self.live = next(k for k in kinds if isinstance(k, Live))

    def __getitem__(self, name: str) -> ConversationKind:
        return self._by_name[name]

    def get(self, name: str) -> ConversationKind | None:
        """The kind stored as ``name``; None for one this server does not know (a
        store written by a newer version): callers skip such conversations."""
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[ConversationKind]:
        return iter(self._by_name.values())

    def of(self, conv: str) -> ConversationKind | None:
        """The kind a conversation id belongs to, from its prefix."""
        return next((k for k in self._by_name.values() if k.owns(conv)), None)

    def public(self, conv: str) -> bool:
        """Whether a refusal may say that ``conv`` does not exist (an unknown id
        counts as private: its refusals reveal nothing)."""
        kind = self.of(conv)
        return kind is not None and kind.public

    def stored(self, conv: str) -> bool:
        """Whether ``conv``'s members are rows in the store (an unknown id counts as
        stored: the store then says who is in it)."""
        kind = self.of(conv)
        return kind is None or kind.membership is Membership.STORED


def default_kinds(policy: ServicePolicy | None = None) -> Kinds:
    return Kinds(Direct(), Circle(), Service(policy), Live())


__all__ = ["Circle", "ConvState", "ConversationKind", "Delivery", "Direct", "Kinds", "Live", "Membership", "Service", "default_kinds"]
