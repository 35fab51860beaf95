"""``service``: one permanent group per car owner, with their Fellow (the
dedicated advisor), staff and bot personas (docs/service-groups.md).

The backend makes and changes it (``service.*`` admin ops); nobody leaves on
their own, the owner can only mute its notifications. The Fellow and staff may
mention everyone; a member recalls their own messages within the window, and
nobody recalls another's: a customer's words stay in their service record.
"""

from __future__ import annotations

from typing import Any, ClassVar

from chatd_protocol import Err, RequestError

from ..policy import ServicePolicy
from ..store.records import SENDER_READS, ConvRecord, ServiceClock
from .base import ConversationKind

OWNER, FELLOW, STAFF, BOT = "owner", "fellow", "staff", "bot"
STAFF_ROLES = frozenset({FELLOW, STAFF})  # the people who answer (bots are not staff)


class Service(ConversationKind):
    name = "service"
    prefix = "s:"
    admin_roles: ClassVar[frozenset[str]] = STAFF_ROLES  # @all; no circle admin ops apply
    fixed_roles: ClassVar[frozenset[str]] = frozenset({OWNER, FELLOW})
    admins_label: ClassVar[str] = "Fellow and staff"
    inbox_rows: ClassVar[bool] = True

    def __init__(self, policy: ServicePolicy | None = None) -> None:
        self.policy = policy or ServicePolicy()
        # every text message moves the group's clocks, in its own transaction
        self.append_effects = (SENDER_READS, ServiceClock("service_clock", self.policy))

    def conv_id(self, owner: str) -> str:
        """The owner's one group, for good: ``s:<owner>``."""
        return f"{self.prefix}{owner}"

    def owner_of(self, conv: str) -> str:
        return conv[len(self.prefix):]

    def wire(self, rec: ConvRecord) -> dict[str, Any]:
        out = super().wire(rec)
        out.update(owner=rec.owner, fellow=rec.attrs.get("fellow"), tags=rec.attrs.get("tags", {}))
        return out

    def notifies(self, conv: str, sender: str) -> tuple[str, ...] | None:
        """Every reply (staff or bot) notifies the owner when offline; the owner's
        messages notify nobody but those mentioned: staff have the inbox."""
        owner = self.owner_of(conv)
        return () if sender == owner else (owner,)

    def check_leave(self, conv: str, kind: str, role: str | None) -> None:
        self.require(conv, kind)
        if role is None:
            raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
        raise RequestError(Err.FORBIDDEN, "nobody leaves a service group; the owner may mute it (notify.set)")

    def check_recall(self, window_ms: int, kind: str, actor: str | None, own: bool, age_ms: int) -> None:
        if not own:
            raise RequestError(Err.FORBIDDEN, "only the sender may recall, in a service group")
        if age_ms > window_ms:
            raise RequestError(Err.RECALL_WINDOW, "the recall window has passed")
