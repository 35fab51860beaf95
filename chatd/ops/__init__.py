"""Op handlers, one module per feature area, gathered into one table.

A handler is ``async def h(conn, rid, d) -> dict | None``: it returns the reply's
``d``, raises RequestError to refuse, or returns None when it has arranged the
reply itself (``send`` replies from its commit callback, without a task).
Arguments were already checked against chatd_protocol.ops.OPS.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from chatd_protocol import OPS, Err, RequestError

from . import circles, direct, messaging, points, presence, session

if TYPE_CHECKING:
    from ..conn import Conn

Handler = Callable[["Conn", Any, dict[str, Any]], Awaitable[dict[str, Any] | None]]
# A synchronous fast path: True if it handled the request (replying itself,
# maybe later), False to fall back to the async handler. Raises RequestError.
FastHandler = Callable[["Conn", Any, dict[str, Any]], bool]


async def _already(conn: Conn, rid: Any, d: dict[str, Any]) -> dict[str, Any] | None:
    raise RequestError(Err.ALREADY_AUTHENTICATED, "this socket is already authenticated")


HANDLERS: dict[str, Handler] = {
    "auth": _already,
    "ping": session.ping,
    "convs": session.convs,
    "dm.open": direct.open_dm,
    "block": direct.block,
    "unblock": direct.unblock,
    "circle.create": circles.create,
    "circle.list": circles.list_,
    "circle.join": circles.join,
    "circle.leave": circles.leave,
    "circle.role": circles.role,
    "circle.announce": circles.announce,
    "circle.mute": circles.mute,
    "members": circles.members,
    "send": messaging.send,
    "recall": messaging.recall,
    "history": messaging.history,
    "read": messaging.read,
    "sync": messaging.sync,
    "presence.sub": presence.sub,
    "presence.unsub": presence.unsub,
    "presence.set": presence.set_,
    "typing": presence.typing,
    "points.balance": points.balance,
    "points.ledger": points.entries,
    "points.top": points.top,
    "tip": points.tip,
    "redpacket.send": points.send_red_packet,
    "redpacket.claim": points.claim_red_packet,
}

FAST: dict[str, FastHandler] = {"send": messaging.send_now}

assert set(HANDLERS) == set(OPS), "every protocol op has exactly one handler"
