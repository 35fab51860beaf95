"""Session-level ops: ping, the caller's conversation list."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..store import conversations

if TYPE_CHECKING:
    from ..conn import Conn


async def ping(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    return {"server_time": conn.svc.now_ms()}


async def convs(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    items, nxt = await conversations.member_view(conn.svc.store, conn.user, d.get("after"), d.get("limit", 50))
    return {"convs": items, "next": nxt}
