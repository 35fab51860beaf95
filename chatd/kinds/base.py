"""The conversation-kind interface: every kind shares the one message pipeline,
and the kind decides membership rules, permissions and fan-out strategy.

Every conversation has a kind, fixed when it is created. A kind owns:

- its **membership model**: stored members (rows in the store, with roles,
  read cursors and mutes) or ephemeral viewers (a live session's audience:
  nothing stored per viewer);
- **send checks** on the hot path, from the cached :class:`ConvState`
  (``check_send``; membership and the text length are checked before it);
- **permissions** of admin writes, decided inside the write's transaction from
  the roles read there (``check_*``: the store calls them; see
  ``chatd/store/base.py``, ``KindCheck`` and friends);
- the **same-transaction effects** of an appended message
  (``append_effects``; a service group will keep its "customer waiting since"
  and first-response clock there);
- its **delivery strategy**: a topic per conversation (every member's sockets
  follow it), coalesced state, or a snapshot then a topic;
- **receipts and typing**: whether they are pushed, and up to what size;
- **offline notifications**: whom a message notifies (``notifies``);
- its **wire form** (``wire``, ``member_wire``) and its **ids**.

Nothing outside this package tests a kind's name: code asks the kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from chatd_protocol import Err, RequestError

from ..store.records import SENDER_READS, ConvRecord, Effect, MemberView


class Membership(StrEnum):
    STORED = "stored"  # member rows: roles, read cursors, mutes; sync covers them
    EPHEMERAL = "ephemeral"  # viewers held in memory only (live sessions)


class Delivery(StrEnum):
    TOPIC = "topic"  # every member's sockets follow the conversation's topic
    COALESCED = "coalesced"  # state pushed at most so often, only what changed
    SNAPSHOT_THEN_TOPIC = "snapshot_then_topic"  # a snapshot on join, live updates after


@dataclass(slots=True)
class ConvState:
    """What the hot path needs to know about a conversation, cached in memory
    (``chatd/core/directory.py``)."""

    id: str
    kind: ConversationKind
    members: dict[str, str]  # user -> role
    muted: dict[str, int]  # user -> muted until (ms)
    blocked: bool  # a kind with blocking: one side blocked the other


class ConversationKind:
    """The defaults are those of a plain stored-membership conversation."""

    name: ClassVar[str]
    prefix: ClassVar[str]  # conversation ids of this kind start with it
    membership: ClassVar[Membership] = Membership.STORED
    delivery: ClassVar[Delivery] = Delivery.TOPIC
    blocking: ClassVar[bool] = False  # blocks between the two members apply (DMs)
    public: ClassVar[bool] = False  # anyone may learn that one exists (listed); else refusals hide it
    admin_roles: ClassVar[frozenset[str]] = frozenset()  # roles that may administer it
    fixed_roles: ClassVar[frozenset[str]] = frozenset()  # roles nobody changes (the owner's)
    admins_label: ClassVar[str] = "admins"  # who administers it, for refusals
    join_event: ClassVar[str | None] = None  # the interaction event a join is (points), if any
    typing_max: ClassVar[int | None] = None  # typing pushed while members <= this (None: always)
    append_effects: tuple[Effect, ...] = (SENDER_READS,)  # what one wrote counts as read
    inbox_rows: ClassVar[bool] = False  # a staff inbox row follows each message (service groups)
    # offline notifications (chatd/notify): every text message notifies every
    # other member who has no socket (DMs), or only those it mentions (@user,
    # and @all by an admin) when False
    notify_members: ClassVar[bool] = False

    def notifies(self, conv: str, sender: str) -> tuple[str, ...] | None:
        """Whom a text message notifies besides those it mentions: None for every
        other member (``notify_members``), else these users (if members)."""
        return None if self.notify_members else ()

    def __repr__(self) -> str:
        return f"<kind {self.name}>"

    # -- identity and wire form -------------------------------------------------

    def owns(self, conv: str) -> bool:
        return conv.startswith(self.prefix)

    def wire(self, rec: ConvRecord) -> dict[str, Any]:
        """The conversation as clients see it (protocol/README.md §4)."""
        return {"conv": rec.conv, "kind": rec.kind, "name": rec.name, "members": rec.members, "last_seq": rec.last_seq}

    def member_wire(self, view: MemberView, user: str) -> dict[str, Any]:
        """The conversation with the member's own cursor (``convs``)."""
        out = self.wire(view.record)
        out.update(
            role=view.role,
            read_seq=view.read_seq,
            unread=view.record.last_seq - view.read_seq,
            muted_until=view.muted_until,
        )
        return out

    # -- the hot path -------------------------------------------------------------

    def check_send(self, state: ConvState, user: str, role: str, mention_all: bool, now: int) -> None:
        """Refuse a text message a member may not send now."""
        if state.blocked:
            raise RequestError(Err.BLOCKED, "this conversation is blocked")
        if state.muted.get(user, 0) > now:
            raise RequestError(Err.MUTED, f"you are muted in this {self.name}")
        if mention_all and role not in self.admin_roles:
            who = f"only {self.name} admins" if self.admin_roles else "nobody"
            raise RequestError(Err.FORBIDDEN, f"{who} may mention everyone here")

    def receipts(self, state: ConvState, max_members: int) -> bool:
        """Whether read receipts are pushed to the members (Tencent IM: groups up to
        200); never across a block."""
        return not state.blocked and len(state.members) <= max_members

    def check_typing(self, state: ConvState) -> bool:
        """Whether a typing indicator is pushed (``BLOCKED`` refuses it)."""
        if state.blocked:
            raise RequestError(Err.BLOCKED, "this conversation is blocked")
        return self.typing_max is None or len(state.members) <= self.typing_max

    # -- decisions inside a write's transaction (the store calls them) ----------

    def require(self, conv: str, kind: str) -> None:
        """``conv`` must be of this kind (``kind`` as stored; "" if it does not exist)."""
        if kind != self.name:
            raise RequestError(Err.NOT_FOUND, f"no {self.name} {conv}")

    def check_admin(self, conv: str, kind: str, actor: str | None, target: str | None) -> None:
        """The actor administers this conversation (announce)."""
        self.require(conv, kind)
        if actor is None:
            raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
        if actor not in self.admin_roles:
            raise RequestError(Err.FORBIDDEN, f"only the {self.name}'s {self.admins_label} may do this")

    def check_leave(self, conv: str, kind: str, role: str | None) -> None:
        self.require(conv, kind)
        if role is None:
            raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
        if role in self.fixed_roles:
            raise RequestError(Err.CONFLICT, f"the {role} cannot leave the {self.name}")

    def check_role_change(self, conv: str, user: str, kind: str, actor: str | None, target: str | None) -> None:
        self.check_admin(conv, kind, actor, target)
        if target is None:
            raise RequestError(Err.NOT_MEMBER, f"{user} is not a member of {conv}")
        if target in self.fixed_roles:
            raise RequestError(Err.FORBIDDEN, f"the {target}'s role cannot change")

    def check_mute(self, conv: str, user: str, kind: str, actor: str | None, target: str | None) -> None:
        self.check_admin(conv, kind, actor, target)
        if target is None:
            raise RequestError(Err.NOT_MEMBER, f"{user} is not a member of {conv}")
        if target in self.admin_roles:
            raise RequestError(Err.FORBIDDEN, "admins cannot be muted")

    def check_recall(self, window_ms: int, kind: str, actor: str | None, own: bool, age_ms: int) -> None:
        """Senders recall their own messages within the window; admins any message
        at any time."""
        admin = actor in self.admin_roles
        if not own and not admin:
            who = f"the sender or a {self.name} admin" if self.admin_roles else "the sender"
            raise RequestError(Err.FORBIDDEN, f"only {who} may recall")
        if own and not admin and age_ms > window_ms:
            raise RequestError(Err.RECALL_WINDOW, "the recall window has passed")
