"""What the store hands back and takes: plain records, engine-neutral, and the
wire form of a message (protocol/README.md §4), which every engine builds the
same way from the same stored fields."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson

TEXT = 0  # message kinds as stored
SYSTEM = 1
_KIND_NAMES = ("text", "system")


@dataclass(frozen=True, slots=True)
class Appended:
    """What the store says about one appended (or deduplicated) message."""

    conv: str
    seq: int
    pos: int
    ts: int
    dup: bool


@dataclass(frozen=True, slots=True)
class SystemMessage:
    """A system message a write appended, as pushed after commit (wire form)."""

    msg: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConvRecord:
    """A conversation as stored, whatever its kind; its kind makes the wire form
    (``chatd.kinds``). ``attrs`` holds what only some kinds have (a circle's
    category, description, announcement, certified flag)."""

    conv: str
    kind: str
    name: str
    members: int
    last_seq: int
    owner: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConvSnapshot:
    """What the hot-path cache loads: kind, members -> role, member -> muted until."""

    kind: str
    members: dict[str, str]
    muted: dict[str, int]


@dataclass(frozen=True, slots=True)
class MemberView:
    """One of a user's conversations with the user's own cursor."""

    record: ConvRecord
    role: str
    read_seq: int
    muted_until: int


@dataclass(frozen=True, slots=True)
class ConvCursor:
    conv: str
    last_seq: int
    read_seq: int


@dataclass(frozen=True, slots=True)
class Effect:
    """A same-transaction effect of an appended message, declared by the
    conversation's kind and applied by the engine in the message's transaction
    (a service group's "customer waiting since" clock will be one)."""

    name: str


# The sender's read cursor moves to their own message: what one wrote counts as
# read (the engine defers it to one cursor write per member and batch).
SENDER_READS = Effect("sender_reads")


@dataclass(frozen=True, slots=True)
class ServiceClock(Effect):
    """A service group's clocks and episodes follow each text message: the
    customer starts waiting, a staff reply answers (``chatd/store/sqlite/clocks.py``).
    ``policy`` is the deployment's :class:`~chatd.policy.ServicePolicy`."""

    policy: Any = None


@dataclass(frozen=True, slots=True)
class Quota:
    """At most ``limit`` of ``action`` per ``user`` in each fixed window of
    ``window_ms``, charged in the transaction of the write it limits (a refused
    write charges nothing)."""

    user: str
    action: str
    limit: int
    window_ms: int


@dataclass(frozen=True, slots=True)
class Entry:
    """A ledger entry; ``key`` is its idempotency key."""

    key: str
    user: str
    currency: str
    amount: int
    rule: str
    ref: str
    note: str
    ts: int

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "currency": self.currency,
            "amount": self.amount,
            "rule": self.rule,
            "ts": self.ts,
        }
        if self.ref:
            out["ref"] = self.ref
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A message as the outbox reader sees it: ``event`` is a system message's
    event map (None for text)."""

    pos: int
    conv: str
    conv_kind: str
    seq: int
    sender: str
    ts: int
    text: bool
    event: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    key: str
    kind: str
    user: str
    conv: str | None
    ts: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HookFailure:
    """An event a consumer gave up on after its retries, kept for operators."""

    key: str
    attempts: int
    error: str


@dataclass(frozen=True, slots=True)
class NotifySource:
    """A text message as the notification planner reads it (``chatd/notify``)."""

    pos: int
    conv: str
    conv_kind: str
    seq: int
    sender: str
    sender_name: str
    ts: int
    text: str
    mentions: tuple[str, ...]
    mention_all: bool


@dataclass(frozen=True, slots=True)
class NotifyPrefs:
    """A user's notification settings: muted until (ms; 0 none) and quiet hours
    as minutes of the user's local day, [quiet_from, quiet_to), which may wrap
    midnight; ``utc_offset`` in minutes."""

    muted_until: int = 0
    quiet_from: int | None = None
    quiet_to: int | None = None
    utc_offset: int = 0


@dataclass(slots=True)
class NotifyState:
    """Coalescing per (user, conversation): when the last notification went out
    and what arrived since, to go out as one when the interval has passed."""

    user: str
    conv: str
    conv_kind: str
    last_at: int  # ms: when the last notification of this pair was emitted
    pending: int = 0  # messages since, not notified yet
    last_seq: int = 0
    sender: str = ""
    sender_name: str = ""
    preview: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    """An offline notification, as the hooks get it (exactly once per ``key`` in
    the store; a hook may be called twice with one and deduplicates on it)."""

    key: str  # "<user>:<conv>:<seq>"
    user: str
    conv: str
    conv_kind: str
    reason: str  # "message" | "mention" | "mention_all"
    seq: int  # the last message it covers
    count: int  # messages it covers (coalesced)
    sender: str
    sender_name: str
    preview: str
    silent: bool  # inside the user's quiet hours: deliver without sound
    ts: int  # ms
    id: int = 0  # its position in the store (0 until stored)

    def wire(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "user": self.user,
            "conv": self.conv,
            "conv_kind": self.conv_kind,
            "reason": self.reason,
            "seq": self.seq,
            "count": self.count,
            "from": self.sender,
            "from_name": self.sender_name,
            "preview": self.preview,
            "silent": self.silent,
            "ts": self.ts,
        }


@dataclass(slots=True)
class NotifyContext:
    """What the planner reads about its candidate recipients in one go."""

    prefs: dict[str, NotifyPrefs] = field(default_factory=dict)
    conv_mutes: dict[tuple[str, str], int] = field(default_factory=dict)  # (user, conv) -> until (ms)
    states: dict[tuple[str, str], NotifyState] = field(default_factory=dict)  # (user, conv)
    blocked: set[tuple[str, str]] = field(default_factory=set)  # (recipient, sender): the recipient blocks them


# -- message content and wire form ---------------------------------------------

_local = threading.local()  # msgpack Packers are not thread-safe; one per thread


def pack(data: dict[str, Any]) -> bytes:
    """A message's stored content: msgpack of {"a": author, "t": text, "m":
    mentions, "ma": mention all} or {"a": author, "e": event}."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    out: bytes = packer.pack(data)
    return out


def unpack(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = msgpack.unpackb(data)
    return out


def message_wire(
    conv: str,
    seq: int,
    pos: int,
    sender: str,
    cid: str | None,
    ts: int,
    kind: int,
    data: dict[str, Any],
    recalled: bool = False,
) -> dict[str, Any]:
    """The wire form of a message (protocol/README.md §4). Empty fields are absent."""
    msg: dict[str, Any] = {
        "conv": conv,
        "seq": seq,
        "pos": pos,
        "ts": ts,
        "from": sender,
        "author": data.get("a", {}),
        "kind": _KIND_NAMES[kind],
    }
    if kind == TEXT:
        if recalled:
            msg["recalled"] = True
        else:
            msg["text"] = data.get("t", "")
            if data.get("m"):
                msg["mentions"] = data["m"]
            if data.get("ma"):
                msg["mention_all"] = True
        if cid is not None:
            msg["cid"] = cid
    else:
        msg["event"] = data.get("e", {})
    return msg


LIVE_MODERATORS = frozenset({"host", "moderator"})  # a live session's roles that see askers and run it


def question_wire(row: Any, staff: bool) -> dict[str, Any]:
    """A question as the audience sees it (``staff`` False: an anonymous asker
    is null) or as hosts and moderators do (the asker always)."""
    (qid, session, room, asker, author, anonymous, text, state, votes, created, answer, answered_live,
     answered_by, answered_ts, merged_into) = row
    if not staff and state in ("hidden", "rejected", "pending"):
        return {"id": qid, "session": session, "state": state}  # taken out of the audience's view: no text
    hidden = bool(anonymous) and not staff
    out: dict[str, Any] = {
        "id": qid, "session": session, "room": room, "asker": None if hidden else asker,
        "author": None if hidden else orjson.loads(author), "anonymous": bool(anonymous), "text": text,
        "state": state, "votes": votes, "ts": created,
    }
    if state == "answered" or answer is not None or answered_live:
        out.update(answer=answer, answered_live=bool(answered_live), answered_by=answered_by,
                   answered_ts=answered_ts)
    if merged_into is not None:
        out["merged_into"] = merged_into
    return out
