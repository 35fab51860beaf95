"""One-to-one conversations: one canonical conversation per pair; blocking."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatd_protocol import Err, RequestError

from ..store import conversations
from ..store.engine import write_op
from .base import commit

if TYPE_CHECKING:
    from ..conn import Conn


def _other(conn: Conn, d: dict[str, Any]) -> str:
    other: str = d["user"]
    if other == conn.user:
        raise RequestError(Err.BAD_REQUEST, "user must be someone else")
    return other


async def open_dm(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    svc, other = conn.svc, _other(conn, d)

    def after(info: dict[str, Any]) -> None:
        conv = info["conv"]
        if conv not in conn.convs:  # first open on this process: both sides follow
            svc.fanout.changed(conv, None)
            svc.fanout.user_follow(conn.user, conv)
            svc.fanout.user_follow(other, conv)

    info = await commit(svc, write_op(conversations.open_dm, a=conn.user, b=other, ts=svc.now_ms()), after)
    return {**info, "peer": other}


async def _set_block(conn: Conn, d: dict[str, Any], on: bool) -> dict[str, Any]:
    svc, other = conn.svc, _other(conn, d)
    conv = conversations.dm_id(conn.user, other)
    # drop the cached DM state: the next send reloads whether either side blocks
    await commit(
        svc,
        write_op(conversations.set_block, blocker=conn.user, blocked=other, on=on),
        lambda _: svc.fanout.changed(conv, None),
    )
    return {}


async def block(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    return await _set_block(conn, d, True)


async def unblock(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any]:
    return await _set_block(conn, d, False)
