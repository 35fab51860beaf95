"""One socket's session: decode -> dispatch, authentication, and its close.

Its states and transitions are the table in ``state.py``. Input: websockets
parses frames (size limit, masking, control frames, close handshake);
``ws.ChatdConnection`` hands each data frame to :meth:`Session.on_frame`
synchronously, instead of queueing it for a reader task. ``send`` (the hot op)
is handled right there when the conversation's state is cached; every other
request goes to the socket's :class:`~chatd.edge.inbox.Inbox`, whose worker
runs them one at a time in arrival order. Output goes through the socket's
:class:`~chatd.edge.sink.SocketSink`.

Authentication registers the socket for its user's membership changes *before*
reading the memberships, so a conversation opened or joined while auth is in
flight is followed, and one left meanwhile is not re-followed from the stale
snapshot (the hub remembers what was left until it is settled).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from chatd_protocol import (
    RULES,
    Close,
    Codec,
    Err,
    FrameError,
    Request,
    RequestError,
    RequestId,
    check_args,
    decode_request,
)
from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State as WsState

from ..auth import AuthError, Verifier
from ..bus import Bus
from ..clock import Clock, Deadlines, Timer
from ..config import Config
from ..core.caller import Caller
from ..core.fanout import Fanout
from ..core.hub import CODEC_SLOTS, Hub
from ..core.pipeline import Pipeline
from ..core.users import UserBook
from ..limits import TokenBucket
from ..logs import Throttled
from ..metrics import Metrics
from ..ops import FastHandler, Ops
from ..presence import Presence
from ..store import StoreUnavailable
from ..store.base import Members, Messages
from . import wsframe
from .heartbeat import PINGED, RX
from .inbox import Inbox
from .sink import Output, SocketSink
from .state import Event, SessionState, State

log = logging.getLogger("chatd.session")

KEEPALIVE_TIMEOUT = 1011  # as websockets' own keepalive closes (RFC 6455: internal error)
PING = b"\x89\x00"  # a final ping frame with no payload

_NO_FAST: Mapping[str, FastHandler] = MappingProxyType({})  # until authenticated


def _address(ws: Any) -> str:
    """The client's address: as a trusted proxy named it, else the peer's."""
    forwarded = getattr(ws, "forwarded", None)
    if forwarded:
        return str(forwarded)
    peer = ws.remote_address
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "-"
CLOSE_WAIT = 2.0  # s for the close handshake before the socket is dropped


class Lifecycle:
    """The server's own state, as sessions see it."""

    __slots__ = ("draining", "ready")

    def __init__(self) -> None:
        self.ready = False
        self.draining = False


@dataclass(frozen=True, slots=True)
class Env:
    """What a session uses, built once in the composition root."""

    config: Config
    clock: Clock
    ops: Ops
    hub: Hub
    fanout: Fanout
    presence: Presence
    members: Members
    messages: Messages
    pipeline: Pipeline
    bus: Bus
    metrics: Metrics
    output: Output
    life: Lifecycle
    users: UserBook
    auth_failures: Throttled  # failed authentications, logged a few a second at most
    verifier: Verifier  # which tokens are accepted
    timers: Deadlines  # the sockets' own timers (auth timeout, token expiry) on one clock timer


class Session(SessionState):
    """A socket's session; its state (``SessionState``) changes only through the table."""

    __slots__ = (
        "auth_timer",
        "began",
        "bucket",
        "caller",
        "codec",
        "ended",
        "env",
        "fast",
        "hb",
        "inbox",
        "inflight",
        "issued",
        "proto",
        "sink",
        "strikes",
        "transport",
        "user",
        "waiter",
        "ws",
    )

    def __init__(self, ws: ServerConnection, env: Env, codec: Codec) -> None:
        self.ws = ws
        self.env = env
        self.transport = ws.transport
        self.proto = ws.protocol
        self.codec = codec
        super().__init__()
        self.sink = SocketSink(
            ws.transport, ws.protocol, CODEC_SLOTS.index(codec.name), env.output, env.config.out_buffer, self
        )
        self.caller: Caller | None = None
        self.fast: Mapping[str, FastHandler] = _NO_FAST
        self.user = ""
        self.bucket = TokenBucket(env.config.request_rate, env.config.request_burst, env.clock.monotonic())
        self.strikes = 0
        self.inbox: Inbox | None = None  # only while requests wait or run
        self.inflight = 0  # sends in the pipeline whose reply is still to come
        self.waiter: asyncio.Future[None] | None = None  # a close waiting for inflight == 0
        self.auth_timer: Timer | None = None
        self.issued = 0  # the iat (unix s) of the token authenticated or being authenticated
        self.began = 0  # when its auth began (ms): a kick after it closes the socket
        self.hb = 0  # the shared heartbeat's state: heartbeat.RX | heartbeat.PINGED
        self.ended: asyncio.Future[None] | None = None  # what the handler waits on while the socket is open

    # -- lifecycle -------------------------------------------------------------

    def begin(self) -> tuple[float, str]:
        """The socket is open: arm the auth timer. Returns what ``end`` logs
        (kept in the handler's frame, not in slots: nothing more per socket)."""
        clock = self.env.clock
        self.auth_timer = self.env.timers.call_later(self.env.config.auth_timeout, self._auth_expired)
        return clock.monotonic(), _address(self.ws)

    def lost(self) -> None:
        """The connection is lost: wake the handler waiting on ``ended``."""
        ended = self.ended
        if ended is not None and not ended.done():
            ended.set_result(None)

    def heartbeat(self) -> bool:
        """One keepalive check (``heartbeat.py``)."""
        proto = self.proto
        if proto.state is not WsState.OPEN:
            return False
        hb = self.hb
        if hb == RX:  # it talked, unasked: alive without a ping
            self.hb = 0
            return True
        if hb == PINGED:  # nothing since the last ping
            self.close_soon(KEEPALIVE_TIMEOUT, "keepalive ping timeout")
            return False
        self.hb = PINGED
        # the frame's bytes directly (an empty ping, unmasked as server frames
        # are): websockets does not track pings it did not send, and its pong
        # for a ping of ours is just a frame (ws.ChatdConnection.process_event)
        if self.transport.get_write_buffer_size() <= self.sink.cap:
            self.transport.write(PING)
        return True

    def end(self, started: float, remote: str) -> None:
        """The connection is gone: leave everything, and log one line for it."""
        self._leave()
        if self.auth_timer is not None:
            self.auth_timer.cancel()
            self.auth_timer = None
        code = self.ws.close_code or 1006
        duration = round(self.env.clock.monotonic() - started, 3)
        log.info(
            "connection closed: user=%s remote=%s duration=%.1fs code=%d",
            self.user or "-", remote, duration, code,
            extra={"user": self.user or None, "remote": remote, "duration_s": duration, "code": code},
        )

    def _leave(self) -> None:
        env = self.env
        if self.sink.open:
            self.sink.open = False
            env.metrics.connections.dec()
            env.presence.closed(self.sink)
        if self.user:
            env.hub.remove(self.user, self.sink)
        self.to(Event.GONE)
        if self.inbox is not None:
            self.inbox.clear()

    def _auth_expired(self) -> None:
        if self.state is State.CONNECTING:
            self.close_soon(Close.AUTH_TIMEOUT, "no auth request in time")

    def _token_expired(self) -> None:
        self.close_soon(Close.TOKEN_EXPIRED, "token expired")

    # -- input -----------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        if not self.taking_input:
            return
        if not frame.fin or frame.opcode is Opcode.CONT:
            self.close_soon(Close.BAD_FRAME, "fragmented messages are not supported")
            return
        text = frame.opcode is Opcode.TEXT
        if text is not self.codec.text:
            self.close_soon(Close.WRONG_FRAME_TYPE, f"{'text' if text else 'binary'} frame on {self.codec.name}")
            return
        data: str | bytes
        if text:
            try:
                data = bytes(frame.data).decode()
            except UnicodeDecodeError:
                self.close_soon(Close.BAD_FRAME, "text frame is not UTF-8")
                return
        else:
            data = bytes(frame.data)
        size = len(frame.data)
        try:
            req = decode_request(self.codec, data)
        except FrameError as exc:
            self.close_soon(exc.code, exc.reason)
            return
        except RequestError as exc:
            if self.state is State.CONNECTING:
                self.close_soon(Close.BAD_FRAME, "malformed request")
            elif self.state is State.AUTHENTICATING:  # answered after the auth reply, in order
                self._enqueue(exc, size)
            else:
                self.error(exc.request_id if exc.request_id is not None else 0, exc)
            return
        if self.state is State.CONNECTING:
            self._before_auth(req)
            return
        env = self.env
        wait = self.bucket.take(env.clock.monotonic())
        if wait:
            self.error(
                req.id, RequestError(Err.RATE_LIMITED, "request rate exceeded", retry_after_ms=int(wait * 1000) + 1)
            )
            return
        if self.state is State.AUTHENTICATING:  # wait behind the auth
            self._enqueue(req, size)
            return
        fast = self.fast.get(req.op)  # only ops the caller's scopes allow are in it (Ops.fast_for)
        caller = self.caller
        if fast is None and caller is not None and req.op in RULES and not env.ops.allowed(caller, req.op):
            # as Ops.run: the scope first, before the arguments are looked at
            self.error(req.id, RequestError(Err.FORBIDDEN, f"{req.op} needs the {RULES[req.op].scope.value} scope"))
            return
        try:  # refuse bad arguments now: only checked requests wait in the queue
            check_args(req.op, req.d)
        except RequestError as exc:
            self.error(req.id, exc)
            return
        if self.inbox is None and not env.life.draining:
            if fast is not None and caller is not None:
                try:
                    if fast(caller, req.id, req.d, self):
                        self.inflight += 1
                        return
                except RequestError:
                    pass  # the async handler decides (a retried cid gets its original ack)
        self._enqueue(req, size)

    def _before_auth(self, req: Request) -> None:
        if req.op != "auth":
            self.close_soon(Close.NOT_AUTHENTICATED, "the first request must be auth")
            return
        self.to(Event.AUTH)
        inbox = self.inbox = Inbox(self.transport, self)
        inbox.start(self._authenticate(req))

    def _enqueue(self, req: Request | RequestError, size: int) -> None:
        inbox = self.inbox
        if inbox is None:
            inbox = self.inbox = Inbox(self.transport, self)
        if not inbox.put(req, size):
            self.close_soon(Close.FLOOD, "too many requests waiting")

    # Inbox owner: the worker runs queued requests while the session serves
    def accepting(self) -> bool:
        return self.serving

    def idle(self) -> None:
        self.inbox = None

    async def _authenticate(self, req: Request) -> None:
        env = self.env
        cfg = env.config
        try:
            try:
                check_args("auth", req.d)
                self.began = env.clock.wall_ms()
                identity = env.verifier.verify(req.d["token"], self.began / 1000)
            except RequestError:
                self.close_soon(Close.AUTH_FAILED, "auth needs a token")
                return
            except AuthError as exc:
                env.auth_failures.warning(
                    "auth failed: %s (close %d) remote=%s", exc.reason, exc.code, _address(self.ws),
                    reason=exc.reason, code=int(exc.code), remote=_address(self.ws),
                )
                self.close_soon(exc.code, exc.reason)
                return
            # Register before reading the memberships: a join, leave or dm.open
            # that commits while we read then reaches this socket too.
            user = identity.id
            self.issued = identity.iat
            shared = env.bus.shared
            # Another node's commits do not move our pipeline's head: read the
            # store's before registering (a lower pos only means a longer sync).
            pos = await env.messages.head() if shared else 0
            await env.users.seen(identity)  # a DM may be opened to this user from now on
            if not self._authenticating():  # closed meanwhile: register nothing
                return
            self.user = user
            env.hub.register(user, self.sink)
            try:
                if shared:  # a join or leave (or a sign-out) on another node from now on reaches us
                    await env.fanout.ready(user)
                # registered: a sign-out committed after this read closes us (sign_out)
                self.sign_out(*await env.users.sign_outs(user))
                if not self._authenticating():
                    return
                convs = await env.members.convs_of(user)
                if not self._authenticating() or env.life.draining:
                    return
                # From here on synchronously: follow, then read the head position.
                # Every commit after this point reaches us as a push; every commit
                # before it is at or below ``pos`` (so sync from ``pos`` is whole).
                env.hub.settle(self.sink, convs)
                if shared:  # pushes from other nodes reach us from here on
                    await env.fanout.ready(user, env.hub.follows(self.sink))
                    if not self._authenticating():
                        return
                else:
                    pos = env.pipeline.head
            finally:
                if not self._authenticating():  # it closed meanwhile: nothing may stay registered
                    env.hub.remove(user, self.sink)
            # everything that can fail comes before the session is open
            caller = Caller.of(identity, self.sink, self.codec)
            fast = env.ops.fast_for(caller)
            expires_in = max(0.0, identity.exp - env.clock.wall_ms() / 1000)
            self.caller, self.fast = caller, fast
            self.to(Event.AUTHENTICATED)
            self.sink.open = True
            if self.auth_timer is not None:
                self.auth_timer.cancel()
            self.auth_timer = env.timers.call_later(expires_in, self._token_expired)
            env.metrics.connections.inc()
            env.presence.opened(self.sink, user)
            self.reply(
                req.id,
                {
                    "user": identity.user(),
                    "pos": pos,
                    "epoch": env.pipeline.epoch,
                    "server_time": env.clock.wall_ms(),
                    "limits": {
                        "max_frame": cfg.max_frame,
                        "max_text": cfg.max_text,
                        "send_rate": cfg.send_rate,
                        "send_burst": cfg.send_burst,
                        "recall_window_s": cfg.recall_window_s,
                    },
                },
            )
        except StoreUnavailable:
            self.close_soon(Close.INTERNAL, "store unavailable")
        except Exception:  # a bug: the socket must not stay half-authenticated
            log.exception("auth failed for %s", self.user or "a socket")
            self.close_soon(Close.INTERNAL, "internal error")

    async def _refresh(self, req: Request) -> None:
        """A new token for the same user: the session goes on with its identity
        (name, badges, roles, type) and expiry, so a long-lived staff socket is not
        closed at the old token's expiry. A refusal keeps the old token in force."""
        env = self.env
        try:
            check_args(req.op, req.d)
            identity = env.verifier.verify(req.d["token"], env.clock.wall_ms() / 1000)
        except RequestError as exc:
            self.error(req.id, exc)
            return
        except AuthError as exc:
            self.error(req.id, RequestError(Err.FORBIDDEN, f"token refused: {exc.reason}"))
            return
        if identity.id != self.user:
            self.error(req.id, RequestError(Err.FORBIDDEN, "the token is another user's"))
            return
        # until the refresh is decided, a revocation of either token closes the socket
        held, self.issued = self.issued, min(self.issued, identity.iat)
        try:
            if identity.iat < (await env.users.sign_outs(identity.id))[0]:
                self.issued = held
                self.error(req.id, RequestError(Err.FORBIDDEN, "token refused: revoked"))
                return
            await env.users.seen(identity)
        except StoreUnavailable:
            self.issued = held
            self.error(req.id, RequestError(Err.UNAVAILABLE, "the store is unavailable; retry"))
            return
        if not self.sink.open:
            return
        caller = Caller.of(identity, self.sink, self.codec)
        self.caller, self.fast = caller, env.ops.fast_for(caller)
        self.issued = identity.iat
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        self.auth_timer = env.timers.call_later(
            max(0.0, identity.exp - env.clock.wall_ms() / 1000), self._token_expired
        )
        self.reply(req.id, {"user": identity.user(), "exp": identity.exp})

    def _authenticating(self) -> bool:
        return self.state is State.AUTHENTICATING and self.proto.state is WsState.OPEN

    async def dispatch(self, req: Request | RequestError) -> None:
        if isinstance(req, RequestError):  # a malformed request that came behind the auth
            self.error(req.request_id if req.request_id is not None else 0, req)
            return
        if self.env.life.draining:
            self.error(req.id, RequestError(Err.UNAVAILABLE, "server is draining; retry after reconnecting"))
            return
        caller = self.caller
        if caller is None:  # cannot happen: requests run only once the session is open
            self.error(req.id, RequestError(Err.INTERNAL, "internal error"))
            return
        ops = self.env.ops
        if req.op == "auth.refresh":
            await self._refresh(req)
            return
        try:
            if req.op in ops.deferred:  # answered from its commit, like the fast path
                result = await ops.run_deferred(caller, req.op, req.id, req.d, self)
                if result is None:
                    self.inflight += 1
                    return
            else:
                result = await ops.run(caller, req.op, req.d)
        except RequestError as exc:
            self.error(req.id, exc)
            return
        self.reply(req.id, result)

    # -- output ----------------------------------------------------------------

    def reply(self, rid: Any, d: dict[str, Any]) -> None:
        self.strikes = 0
        self.sink.write(wsframe.frame(self.codec.dumps({"id": rid, "d": d}), self.codec.text))

    def error(self, rid: Any, exc: RequestError) -> None:
        """An error reply. Requests refused as ``rate_limited`` (the request rate,
        the send rate, a quota) count as strikes: the ``flood_strikes``-th in a row,
        with no other answer between them, closes the socket with 4202 instead."""
        if exc.code is Err.RATE_LIMITED:
            self.strikes += 1
            if self.strikes >= self.env.config.flood_strikes:
                self.close_soon(Close.FLOOD, "request flood")  # this one is answered by the close
                return
        else:
            self.strikes = 0
        self.env.metrics.errors.labels(exc.code.value).inc()
        self.sink.write(wsframe.frame(self.codec.dumps({"id": rid, "error": exc.wire()}), self.codec.text))

    # Responder: a fast-path send's answer, from its commit callback
    def answer(self, rid: RequestId, d: dict[str, Any]) -> None:
        self.strikes = 0
        self.inflight -= 1
        if not self.inflight and self.waiter is not None:
            self._drained()
        self.sink.write(wsframe.frame(self.codec.dumps({"id": rid, "d": d}), self.codec.text))

    def refuse(self, rid: RequestId, exc: RequestError) -> None:
        self.inflight -= 1
        if not self.inflight and self.waiter is not None:
            self._drained()
        self.error(rid, exc)

    def _drained(self) -> None:
        """Every send in flight was answered: a close waiting for that goes on."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def sign_out(self, before: int, kicked: int) -> None:
        """A backend signed this user out: ``admin.revoke`` of tokens issued before
        ``before`` (unix s), or ``admin.kick`` of sockets whose auth began before
        ``kicked`` (ms). If it applies to this socket, close it with 4104; the
        requests it queued are dropped unanswered (sends in the pipeline are
        still answered)."""
        if (self.issued < before or self.began < kicked) and self.state in (State.AUTHENTICATING, State.OPEN):
            if self.inbox is not None:
                self.inbox.clear()
            self.close_soon(Close.SIGNED_OUT, "signed out by the server")

    def slow(self) -> None:
        """Outbound buffer over its cap: stop pushing to this socket and close it
        with 4001 so the client reconnects and catches up with ``sync``."""
        if self.sink.open:
            self.close_soon(Close.SLOW_CONSUMER, "slow consumer")

    # -- closing ---------------------------------------------------------------

    def close_soon(self, code: int, reason: str) -> None:
        """Close from synchronous code. Input stops now; requests accepted before
        are still answered (protocol violations, flood) unless the close is for
        slowness, which stops all output at once."""
        if not self.may(Event.CLOSE):
            return
        self.to(Event.CLOSE)
        if code == Close.SLOW_CONSUMER:
            self._leave()
        asyncio.get_running_loop().create_task(self._close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        if not self.may(Event.CLOSE):  # already under way
            return
        self.to(Event.CLOSE)
        await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        env = self.env
        env.metrics.closes.labels(str(code)).inc()
        if self.serving:
            # answer what was accepted before the close: queued requests, and
            # sends whose commit is still under way
            try:
                async with asyncio.timeout(env.config.drain_timeout):
                    inbox = self.inbox
                    if inbox is not None and inbox.task is not None:
                        await asyncio.shield(inbox.task)
                    if self.inflight:
                        self.waiter = asyncio.get_running_loop().create_future()
                        await self.waiter
            except Exception:
                pass
        self._leave()
        try:
            # websockets' close() first drains the write buffer, with no time
            # limit: a peer that never reads again (a slow consumer, whose close
            # frame sits behind a full buffer) would keep the socket and its
            # buffer. Give the close handshake CLOSE_WAIT s, then drop the socket.
            async with asyncio.timeout(CLOSE_WAIT):
                await self.ws.close(code, reason)
        except Exception:  # timed out, or the transport is already gone
            self.transport.abort()
