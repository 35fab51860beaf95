"""Presence subscriptions and state, and typing indicators: ephemeral, never stored."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from chatd_protocol import Err, RequestError

from .base import member_state

if TYPE_CHECKING:
    from ..conn import Conn

TYPING_EVERY = 3.0  # s: one typing push per user and conversation at most this often
TYPING_MAX_MEMBERS = 200  # no typing pushes in larger circles (as read receipts)


async def sub(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    return {"presence": await conn.svc.presence.watch(conn, d["users"])}


async def unsub(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    conn.svc.presence.unwatch(conn, d["users"])
    return {}


async def set_(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    duty = d.get("on_duty")
    if duty is not None and not (conn.identity and conn.identity.is_staff):
        raise RequestError(Err.FORBIDDEN, "only staff have an on-duty state")
    dev = conn.svc.presence.set(conn, d.get("status"), duty)
    return {"status": dev.status, "on_duty": dev.duty}


async def typing(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    conv = d["conv"]
    state, _ = await member_state(conn, conv)
    svc = conn.svc
    if state.blocked:
        raise RequestError(Err.BLOCKED, "this conversation is blocked")
    if len(state.members) > TYPING_MAX_MEMBERS:
        return {"pushed": False}
    now = time.monotonic()
    last = svc.typing.get((conn.user, conv))
    if last is not None and now - last < TYPING_EVERY:
        return {"pushed": False}
    if len(svc.typing) > 100_000:  # forget stale entries
        svc.typing = {k: t for k, t in svc.typing.items() if now - t < TYPING_EVERY}
    svc.typing[(conn.user, conv)] = now
    svc.fanout.publish(conv, "typing", {"conv": conv, "user": conn.user})
    return {"pushed": True}
