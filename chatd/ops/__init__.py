"""Op handlers, one module per feature area, gathered into one table.

Each module's class gets exactly the collaborators it uses (built in
``chatd/app.py``). :class:`Ops` is the table: every op of the protocol's op
table has exactly one handler (checked at start), and :meth:`Ops.run` is how
any caller runs one: the WebSocket session, an HTTP admin request, a test.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import TypeVar

from chatd_protocol import OPS, RULES, Err, RequestError, RequestId, Scope, check_args

from ..clock import Clock, SystemClock
from ..core.caller import Caller
from ..metrics import Metrics
from ..store import StoreUnavailable
from .admin import AdminOps
from .base import Args, DeferredHandler, FastHandler, Handler, Reply, Responder
from .campaigns import CampaignOps
from .circles import Circles
from .desk import DeskOps
from .direct import DirectOps
from .live import LiveOps
from .messaging import Messaging
from .notify import NotifyOps
from .points import PointsOps
from .presence import PresenceOps
from .service import ServiceOps
from .session import SessionOps

log = logging.getLogger("chatd.ops")

T = TypeVar("T")


class Ops:
    def __init__(
        self,
        handlers: Mapping[str, Handler],
        fast: Mapping[str, FastHandler],
        deferred: Mapping[str, DeferredHandler],
        metrics: Metrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.clock: Clock = clock or SystemClock()
        if handlers.keys() != OPS.keys():
            missing, extra = OPS.keys() - handlers.keys(), handlers.keys() - OPS.keys()
            raise AssertionError(f"every protocol op has exactly one handler (missing {missing}, extra {extra})")
        self.handlers = dict(handlers)
        self.fast = dict(fast)
        self.deferred = dict(deferred)
        assert self.fast.keys() == self.deferred.keys(), "a fast op needs its deferred form"
        self._fast_for: dict[frozenset[Scope], dict[str, FastHandler]] = {}

    @staticmethod
    def allowed(caller: Caller, op: str) -> bool:
        """The caller holds the op's scope; or the op serves backends too
        (``Rule.backend``) and the caller holds the admin scope."""
        rule = RULES[op]
        scope = rule.scope
        return scope is Scope.ANYONE or scope in caller.scopes or (rule.backend and Scope.ADMIN in caller.scopes)

    def fast_for(self, caller: Caller) -> Mapping[str, FastHandler]:
        """The fast handlers this caller may run (one shared table per set of scopes)."""
        table = self._fast_for.get(caller.scopes)
        if table is None:
            table = self._fast_for[caller.scopes] = {
                op: h for op, h in self.fast.items() if self.allowed(caller, op)
            }
        return table

    async def run(self, caller: Caller, op: str, d: Args) -> Reply:
        """Check the caller's scope and the arguments, run the handler. Raises
        :class:`RequestError` for every refusal; a failing store or a bug come
        out as ``unavailable`` / ``internal``, never with their details."""
        self._check(caller, op, d)
        started = self.clock.monotonic()
        try:
            return await self._guard(caller, op, self.handlers[op](caller, d))
        finally:  # time to the answer, refusals included (a fast op times itself to its commit)
            if op not in self.fast:
                self.metrics.op(op).observe(self.clock.monotonic() - started)

    async def run_deferred(self, caller: Caller, op: str, rid: RequestId, d: Args, respond: Responder) -> Reply | None:
        """A socket's request for a fast op (see :data:`DeferredHandler`)."""
        self._check(caller, op, d)
        return await self._guard(caller, op, self.deferred[op](caller, rid, d, respond))

    def _check(self, caller: Caller, op: str, d: Args) -> None:
        # the scope first: a caller without it has nothing of its request looked at
        # (a socket checks in the same order when the frame arrives)
        if op in RULES and not self.allowed(caller, op):
            raise RequestError(Err.FORBIDDEN, f"{op} needs the {RULES[op].scope.value} scope")
        check_args(op, d)

    @staticmethod
    async def _guard(caller: Caller, op: str, run: Awaitable[T]) -> T:
        try:
            return await run
        except RequestError:
            raise
        except StoreUnavailable:
            raise RequestError(Err.UNAVAILABLE, "the store is unavailable; retry") from None
        except Exception:
            log.exception("op %s failed for %s", op, caller.user)
            raise RequestError(Err.INTERNAL, "internal error") from None


def table(
    session: SessionOps,
    direct: DirectOps,
    circles: Circles,
    messaging: Messaging,
    presence: PresenceOps,
    points: PointsOps,
    notify: NotifyOps,
    admin: AdminOps,
    service: ServiceOps,
    desk: DeskOps,
    campaigns: CampaignOps,
    live: LiveOps,
    metrics: Metrics | None = None,
    clock: Clock | None = None,
) -> Ops:
    return Ops(
        {
            "auth": session.auth,
            "auth.refresh": session.refresh,
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
            "members": circles.members_page,
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
            "notify.get": notify.get,
            "notify.set": notify.set_,
            "service.provision": service.provision,
            "service.members": service.members,
            "service.handover": service.handover,
            "service.post": service.post,
            "service.request": desk.request,
            "service.status": desk.status,
            "service.requests": desk.requests,
            "service.close": desk.close,
            "service.rate": desk.rate,
            "inbox": desk.inbox,
            "service.claim": desk.claim,
            "service.to_human": desk.to_human,
            "service.campaign": campaigns.create,
            "service.report": desk.report,
            "campaign.claim": campaigns.claim,
            "live.create": live.create,
            "live.update": live.update,
            "live.state": live.state,
            "live.list": live.listing,
            "live.follow": live.follow,
            "live.join": live.join,
            "live.leave": live.leave,
            "live.ask": live.ask,
            "live.vote": live.vote,
            "live.moderate": live.moderate,
            "live.merge": live.merge,
            "live.answer": live.answer,
            "live.mark": live.mark,
            "live.queue": live.queue,
            "live.chat": live.chat,
            "live.mute": live.mute,
            "live.archive": live.archive,
            "poll.create": live.poll_create,
            "poll.vote": live.poll_vote,
            "poll.close": live.poll_close,
            "poll.get": live.poll_get,
            "admin.kick": admin.kick,
            "admin.revoke": admin.revoke,
        },
        {"send": messaging.send_now},
        {"send": messaging.send_later},
        metrics,
        clock,
    )


__all__ = [
    "AdminOps",
    "CampaignOps",
    "Circles",
    "DeskOps",
    "DirectOps",
    "FastHandler",
    "Handler",
    "LiveOps",
    "Messaging",
    "NotifyOps",
    "Ops",
    "PointsOps",
    "PresenceOps",
    "Responder",
    "ServiceOps",
    "SessionOps",
    "table",
]
