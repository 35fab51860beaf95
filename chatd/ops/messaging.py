"""Messages: send (the hot path), recall, history, read cursors, catch-up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatd_protocol import Err, RequestError

from ..interactions import Interaction
from ..store import conversations, messages
from ..store.engine import write_op
from ..store.messages import Appended
from .base import commit, member_state

if TYPE_CHECKING:
    from ..conn import Conn

ADMIN_ROLES = ("owner", "admin")


def send_now(conn: Conn, rid: Any, d: dict[str, Any]) -> bool:
    """The hot path, run synchronously as the frame is parsed. Returns False
    (nothing done) when the conversation's state is not cached; ``send`` then
    loads it and comes back here."""
    svc = conn.svc
    user = conn.user
    conv = d["conv"]
    state = svc.directory.cached(conv)
    if state is None:
        return False
    role = state.members.get(user)
    if role is None:
        raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
    text = d["text"]
    if len(text) > svc.config.max_text:
        raise RequestError(Err.TOO_LONG, f"text is over {svc.config.max_text} characters")
    if state.blocked:
        raise RequestError(Err.BLOCKED, "this conversation is blocked")
    now = svc.now_ms()
    if state.muted.get(user, 0) > now:
        raise RequestError(Err.MUTED, "you are muted in this circle")
    mention_all = d.get("mention_all", False)
    if mention_all and (state.kind != "circle" or role not in ADMIN_ROLES):
        raise RequestError(Err.FORBIDDEN, "only circle admins may mention everyone")
    mentions = d.get("mentions")
    if mentions:
        mentions = list(dict.fromkeys(m for m in mentions if m in state.members))
    wait = svc.send_allowed(user)
    if wait:
        raise RequestError(Err.RATE_LIMITED, "send rate exceeded", retry_after_ms=int(wait * 1000) + 1)

    cid = d["cid"]
    data: dict[str, Any] = {"a": conn.author, "t": text}
    if mentions:
        data["m"] = mentions
    if mention_all:
        data["ma"] = True

    def on_commit(a: Appended) -> None:
        conn.sent()
        conn.reply(rid, {"conv": a.conv, "seq": a.seq, "pos": a.pos, "ts": a.ts, "dup": a.dup})
        if a.dup:
            return
        svc.metrics.text_messages += 1
        svc.fanout.publish(conv, "msg", messages.wire(conv, a.seq, a.pos, user, cid, now, messages.TEXT, data))
        svc.interactions.emit(Interaction("message.sent", user, conv, a.seq, now, {"kind": state.kind}))

    def on_error(exc: RequestError) -> None:
        conn.sent()
        conn.error(rid, exc)

    op = write_op(
        messages.append,
        conv=conv,
        sender=user,
        cid=cid,
        ts=now,
        kind=messages.TEXT,
        data=messages.pack(data),
        savepoint=False,
    )
    svc.pipeline.submit(op, on_commit, on_error)
    conn.inflight += 1
    return True


async def send(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any] | None:
    """``send`` when the fast path could not run or refused: load the state and
    run it; before refusing, look for the same ``cid``: a retry of a message that
    was stored (say, before the sender was muted) gets its original ack."""
    try:
        await member_state(conn, d["conv"])
        if not send_now(conn, rid, d):  # evicted meanwhile: refuse rather than loop
            raise RequestError(Err.UNAVAILABLE, "conversation state is loading; retry")
        return None
    except RequestError:
        original = await messages.find(conn.svc.store, conn.user, d["cid"])
        if original is None:
            raise
        return {"conv": original.conv, "seq": original.seq, "pos": original.pos, "ts": original.ts, "dup": True}


async def recall(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    conv, seq = d["conv"], d["seq"]
    await member_state(conn, conv)
    assert conn.identity is not None
    svc = conn.svc
    event = await commit(
        svc,
        write_op(
            conversations.recall,
            conv=conv,
            seq=seq,
            actor=conn.user,
            author=conn.identity.author(),
            ts=svc.now_ms(),
            window_ms=svc.config.recall_window_s * 1000,
        ),
    )
    return {"seq": event.msg["seq"]}


# Encoded replies stay under this size whatever the codec: JSON escapes control
# characters as 6 bytes each, so the store's byte budget alone is not enough.
MAX_REPLY = 768 * 1024


def _fit(conn: Conn, msgs: list[dict[str, Any]], keep_newest: bool) -> tuple[list[dict[str, Any]], bool]:
    """Drop messages (the oldest or the newest end) until the encoded list fits MAX_REPLY."""
    trimmed = False
    while len(msgs) > 1 and len(conn.codec.dumps(msgs)) > MAX_REPLY:
        half = len(msgs) // 2
        msgs = msgs[half:] if keep_newest else msgs[:half]
        trimmed = True
    return msgs, trimmed


async def history(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    await member_state(conn, d["conv"])
    msgs, more = await messages.history(conn.svc.store, d["conv"], d.get("before"), d.get("limit", 50))
    msgs, trimmed = _fit(conn, msgs, keep_newest=True)
    return {"messages": msgs, "more": more or trimmed}


async def read(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    conv = d["conv"]
    state, _ = await member_state(conn, conv)
    svc = conn.svc
    user = conn.user
    receipts = len(state.members) <= svc.config.read_receipt_max_members

    def after(result: tuple[int, int, bool]) -> None:
        if receipts and result[2]:  # only when the cursor moved
            svc.fanout.publish(conv, "read", {"conv": conv, "user": user, "seq": result[0]})

    read_seq, unread, _ = await commit(
        svc, write_op(conversations.mark_read, conv=conv, user=user, seq=d["seq"]), after
    )
    return {"read_seq": read_seq, "unread": unread}


async def sync(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    svc = conn.svc
    since = d["since"]
    limit = d.get("limit", 500)
    head = svc.pipeline.head  # read before the query: everything <= head is in it
    msgs, changed, more = await messages.since(svc.store, conn.user, since, limit)
    msgs, trimmed = _fit(conn, msgs, keep_newest=False)
    more = more or trimmed
    if more:
        pos = msgs[-1]["pos"]
    else:
        pos = max(head, since, msgs[-1]["pos"] if msgs else 0)
    return {
        "messages": msgs,
        "pos": pos,
        "more": more,
        "convs": [{"conv": c, "last_seq": last, "read_seq": rs, "unread": last - rs} for c, last, rs in changed],
    }
