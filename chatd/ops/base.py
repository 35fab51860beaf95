"""What op handlers are, and the helpers the op modules share.

A handler is ``async def h(caller, args) -> reply``: it returns the reply's
``d`` or raises :class:`RequestError` to refuse. The same handler runs for a
WebSocket request, an HTTP admin request and a test with no socket at all
(``caller.sink`` is None then). Arguments were already checked against the
protocol's op table.

The hot op, ``send``, also has a synchronous fast form (:data:`FastHandler`)
that the edge runs as the frame is parsed, with no task: it answers later,
from the commit callback, through a :class:`Responder`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from chatd_protocol import Err, RequestError, RequestId, Scope

from ..core.caller import Caller
from ..core.directory import Directory
from ..core.fanout import Fanout
from ..core.pipeline import Pipeline
from ..kinds import ConvState
from ..metrics import Metrics
from ..store import Write
from ..store.records import Quota, SystemMessage

T = TypeVar("T")

Args = dict[str, Any]
Reply = dict[str, Any]
Handler = Callable[[Caller, Args], Awaitable[Reply]]


class Responder(Protocol):
    """Where a fast handler's answer goes once its write committed."""

    def answer(self, rid: RequestId, d: Reply) -> None: ...

    def refuse(self, rid: RequestId, exc: RequestError) -> None: ...


# True if it handled the request (answering through the responder, maybe
# later); False to fall back to the async handler. Raises RequestError.
FastHandler = Callable[[Caller, RequestId, Args, Responder], bool]
# The fast op's async form for a socket: it awaits what the fast form could not
# (loading state), then answers through the responder like the fast form and
# returns None, or returns the reply itself. Unlike the plain handler it never
# waits for the commit, so the socket's next request is not held behind it.
DeferredHandler = Callable[[Caller, RequestId, Args, Responder], Awaitable[Reply | None]]


async def member_state(directory: Directory, caller: Caller, conv: str) -> tuple[ConvState, str]:
    """The conversation's cached state and the caller's role, or a refusal that
    reveals nothing: of a conversation that is not public (a DM) an outsider learns
    ``not_member`` whether or not it exists; of a public one (a circle, listed
    anyway) ``not_found`` when it does not."""
    state = await directory.get(conv)
    role = state.members.get(caller.user) if state is not None else None
    if state is None or role is None:
        if state is None and directory.kinds.public(conv):
            raise RequestError(Err.NOT_FOUND, f"no conversation {conv}")
        raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
    return state, role


HOUR_MS = 3_600_000


def creation_quota(caller: Caller, action: str, per_hour: int) -> Quota | None:
    """The hourly quota of a creation op for this caller: none when unlimited
    (0), and none for staff and bots (trusted accounts that create for others)."""
    if not per_hour or Scope.STAFF in caller.scopes or Scope.BOT in caller.scopes:
        return None
    return Quota(caller.user, action, per_hour, HOUR_MS)


def system_messages(result: Any) -> list[SystemMessage]:
    if isinstance(result, SystemMessage):
        return [result]
    if isinstance(result, tuple):
        return [r for r in result if isinstance(r, SystemMessage)]
    return []


class Commit:
    """Run a write through the pipeline; on commit, in commit order: ``after``
    (cache and subscription updates), then push every system message it
    appended."""

    def __init__(self, pipeline: Pipeline, fanout: Fanout, metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.fanout = fanout
        self.metrics = metrics

    async def __call__(self, op: Write[T], after: Callable[[T], None] | None = None) -> T:
        def on_commit(result: T) -> None:
            try:
                if after is not None:
                    after(result)
            finally:  # what was stored is pushed even if a cache update failed
                for event in system_messages(result):
                    self.metrics.system_messages += 1
                    self.fanout.publish(event.msg["conv"], "msg", event.msg)

        return await self.pipeline.write(op, on_commit)
