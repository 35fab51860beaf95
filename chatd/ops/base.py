"""Helpers shared by the op modules: membership checks, committing system events."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chatd_protocol import Err, RequestError

from ..store.conversations import ConvState, Event
from ..store.engine import WriteOp

if TYPE_CHECKING:
    from ..conn import Conn
    from ..services import Services


async def member_state(conn: Conn, conv: str) -> tuple[ConvState, str]:
    """The conversation's cached state and the caller's role, or a refusal."""
    state = await conn.svc.directory.get(conv)
    if state is None:
        raise RequestError(Err.NOT_FOUND, f"no conversation {conv}")
    role = state.members.get(conn.user)
    if role is None:
        raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
    return state, role


def events_of(result: Any) -> list[Event]:
    if isinstance(result, Event):
        return [result]
    if isinstance(result, tuple):
        return [r for r in result if isinstance(r, Event)]
    return []


async def commit(svc: Services, op: WriteOp, after: Callable[[Any], None] | None = None) -> Any:
    """Run ``op`` through the pipeline. On commit, in commit order: ``after``
    (cache and subscription updates), then push every system event it produced."""

    def on_commit(result: Any) -> None:
        try:
            if after is not None:
                after(result)
        finally:  # what was stored is pushed even if a cache update failed
            for event in events_of(result):
                svc.metrics.system_messages += 1
                svc.fanout.publish(event.msg["conv"], "msg", event.msg)

    return await svc.pipeline.write(op, on_commit)
