"""``dm``: two users, one canonical conversation per pair, blocking."""

from __future__ import annotations

from typing import Any, ClassVar

from chatd_protocol import Err, RequestError

from ..store.records import MemberView
from .base import ConversationKind


class Direct(ConversationKind):
    name = "dm"
    prefix = "dm:"
    blocking: ClassVar[bool] = True
    notify_members: ClassVar[bool] = True  # a DM is for the peer: every message notifies them

    def conv_id(self, a: str, b: str) -> str:
        """The pair's one conversation: ``dm:<a>:<b>`` with the ids sorted."""
        if a == b:
            raise RequestError(Err.BAD_REQUEST, "user must be someone else")
        x, y = sorted((a, b))
        return f"{self.prefix}{x}:{y}"

    def peer(self, conv: str, user: str) -> str:
        a, b = conv[len(self.prefix) :].split(":")
        return b if a == user else a

    def member_wire(self, view: MemberView, user: str) -> dict[str, Any]:
        out = super().member_wire(view, user)
        out["peer"] = self.peer(view.record.conv, user)
        return out
