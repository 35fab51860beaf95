"""``circle``: users join by interest, city, profession or family role; an owner
and admins; announcements, mutes, @all, recall by admins."""

from __future__ import annotations

from typing import Any, ClassVar

from ..store.records import ConvRecord
from .base import ConversationKind

TYPING_MAX_MEMBERS = 200  # no typing pushes in larger circles (as read receipts)


class Circle(ConversationKind):
    name = "circle"
    prefix = "c:"
    public: ClassVar[bool] = True  # circles are listed (circle.list): their existence is no secret
    admin_roles: ClassVar[frozenset[str]] = frozenset({"owner", "admin"})
    fixed_roles: ClassVar[frozenset[str]] = frozenset({"owner"})
    admins_label: ClassVar[str] = "owner and admins"
    join_event: ClassVar[str | None] = "circle.joined"
    typing_max: ClassVar[int | None] = TYPING_MAX_MEMBERS

    def wire(self, rec: ConvRecord) -> dict[str, Any]:
        out = super().wire(rec)
        a = rec.attrs
        out.update(
            category=a.get("category"),
            certified=bool(a.get("certified")),
            description=a.get("description", ""),
            announcement=a.get("announcement", ""),
            owner=rec.owner,
        )
        return out
