"""What the store hands back and takes: plain records, engine-neutral, and the
wire form of a message (protocol/README.md §4), which every engine builds the
same way from the same stored fields."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import msgpack

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
