"""One connection: its states, decode -> dispatch, and its bounded outbound path.

All of a session's transitions live here (h11's ``_state.py`` idea)::

    AWAIT_AUTH --auth ok--> OPEN --(peer close | server close)--> CLOSED
        |  no auth in time      -> close 4100
        |  other op first       -> close 4103
        |  bad / expired token  -> close 4101 / 4102
    any state: undecodable frame -> 4200, wrong frame type -> 4201,
    OPEN: flood -> 4202; outbound buffer over cap -> 4001 (slow consumer);
          drain -> 4000

Input: websockets parses frames (size limit, masking, control frames, close
handshake); :class:`ChatdConnection` hands each data frame to
:meth:`Conn.on_frame` synchronously, instead of queueing it for a reader task.
``send`` — the hot op — is handled right there when the conversation's state is
cached; every other request goes to a per-connection worker task that runs the
connection's requests one at a time, in arrival order (a ``send`` that arrives
while the worker is busy queues behind it, so order is kept).

Output: frames are written straight to the transport as complete, unmasked
WebSocket frames (see wsframe.py): never awaited, so a push to thousands of
sockets costs one ``transport.write`` each; while the pipeline delivers a batch,
output is corked and each socket gets one write (output.py).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from chatd_protocol import (
    Close,
    Codec,
    Err,
    FrameError,
    Request,
    RequestError,
    check_args,
    codec_for,
    decode_request,
)
from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event
from websockets.protocol import State as WsState

from . import wsframe
from .auth import AuthError, Identity, verify_token
from .hub import CODEC_SLOTS
from .limits import TokenBucket
from .store import StoreUnavailable
from .store.conversations import user_convs
from .store.messages import head

if TYPE_CHECKING:
    from .ops import FastHandler, Handler
    from .services import Services

log = logging.getLogger("chatd.conn")

CLOSE_WAIT = 2.0  # s for the close handshake before the socket is dropped

# Requests waiting for the worker: past HIGH_WATER bytes of frames the socket stops
# being read (TCP pushes back on the client) until the queue is under LOW_WATER.
# The hard limits only trip on frames already read when reading paused.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
MAX_QUEUED = 1000
MAX_QUEUED_BYTES = 4 << 20


class State(enum.Enum):
    AWAIT_AUTH = "await_auth"
    OPEN = "open"
    CLOSED = "closed"


class ChatdConnection(ServerConnection):
    """websockets' server connection with data frames handed to chatd as they
    are parsed. ``svc``, ``handlers`` and ``fast`` are set on a subclass made
    per server (see server.py)."""

    svc: Services
    handlers: dict[str, Handler]
    fast: dict[str, FastHandler]
    chatd: Conn | None = None

    def attach(self) -> Conn | None:
        """The chatd side of this socket (made on first use), or None when no
        chatd subprotocol was negotiated."""
        if self.chatd is None:
            try:
                codec = codec_for(self.subprotocol)
            except FrameError:
                return None
            self.chatd = Conn(self, self.svc, codec, self.handlers, self.fast)
        return self.chatd

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode <= Opcode.BINARY:  # CONT, TEXT, BINARY
            conn = self.attach()
            if conn is not None:
                conn.on_frame(event)
                return
        super().process_event(event)


class Conn:
    __slots__ = (
        "auth_timer",
        "author",
        "bucket",
        "closing",
        "codec",
        "convs",
        "fast",
        "handlers",
        "identity",
        "inflight",
        "left",
        "out",
        "paused",
        "pending",
        "pending_size",
        "proto",
        "queue",
        "queued_bytes",
        "slot",
        "state",
        "strikes",
        "svc",
        "transport",
        "user",
        "waiter",
        "watching",
        "worker",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        svc: Services,
        codec: Codec,
        handlers: dict[str, Handler],
        fast: dict[str, FastHandler],
    ) -> None:
        self.ws = ws
        self.transport = ws.transport
        self.proto = ws.protocol
        self.svc = svc
        self.codec = codec
        self.slot = CODEC_SLOTS.index(codec.name)
        self.handlers = handlers
        self.fast = fast
        self.state = State.AWAIT_AUTH
        self.identity: Identity | None = None
        self.user = ""
        self.author: dict[str, Any] = {}  # the identity's snapshot carried by its messages
        self.convs: set[str] = set()
        self.bucket = TokenBucket(svc.config.request_rate, svc.config.request_burst, svc.monotonic())
        self.strikes = 0
        # (request, frame size) for the worker, in order; None while empty (an empty
        # deque is 600 bytes, times every idle socket)
        self.queue: deque[tuple[Request, int]] | None = None
        self.queued_bytes = 0
        self.paused = False  # reading paused while the queue is over HIGH_WATER
        self.inflight = 0  # sends in the pipeline whose reply is still to come
        self.waiter: asyncio.Future[None] | None = None  # a close waiting for inflight == 0
        self.left: set[str] | None = None  # during auth: conversations left meanwhile
        self.watching: set[str] | None = None  # users whose presence this socket subscribed to
        self.worker: asyncio.Task[None] | None = None
        self.out = svc.output
        self.pending: list[bytes] | None = None  # frames held while output is corked
        self.pending_size = 0
        self.auth_timer: asyncio.TimerHandle | None = None
        self.closing = False  # a close is under way: no more input is taken

    # -- lifecycle -------------------------------------------------------------

    async def serve(self) -> None:
        """The websockets handler's body: arm the auth timer, wait for the end."""
        loop = asyncio.get_running_loop()
        self.auth_timer = loop.call_later(self.svc.config.auth_timeout, self._auth_expired)
        try:
            await self.ws.wait_closed()
        finally:
            self._leave()
            if self.auth_timer is not None:
                self.auth_timer.cancel()

    def _leave(self) -> None:
        if self.state is State.OPEN:
            self.svc.metrics.connections.dec()
            self.svc.presence.closed(self)
        if self.user:
            self.svc.hub.remove(self)
        self.state = State.CLOSED
        self.queue = None
        self.queued_bytes = 0

    def _auth_expired(self) -> None:
        if self.state is State.AWAIT_AUTH and self.worker is None:
            self.close_soon(Close.AUTH_TIMEOUT, "no auth request in time")

    def _token_expired(self) -> None:
        self.close_soon(Close.TOKEN_EXPIRED, "token expired")

    # -- input -----------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        if self.closing or self.state is State.CLOSED:
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
            if self.state is State.AWAIT_AUTH:
                self.close_soon(Close.BAD_FRAME, "malformed request")
            else:
                self.error(exc.request_id if exc.request_id is not None else 0, exc)
            return
        if self.state is State.AWAIT_AUTH and self.worker is None:
            self._before_auth(req)
            return
        wait = self.bucket.take(self.svc.monotonic())
        if wait:
            self.strikes += 1
            if self.strikes >= self.svc.config.flood_strikes:
                self.close_soon(Close.FLOOD, "request flood")
            else:
                self.error(
                    req.id, RequestError(Err.RATE_LIMITED, "request rate exceeded", retry_after_ms=int(wait * 1000) + 1)
                )
            return
        self.strikes = 0
        if self.state is State.AWAIT_AUTH:  # auth in flight: wait behind it
            self._enqueue(req, size)
            return
        try:  # refuse bad arguments now: only checked requests wait in the queue
            check_args(req.op, req.d)
        except RequestError as exc:
            self.error(req.id, exc)
            return
        if self.worker is None and not self.svc.draining:
            fast = self.fast.get(req.op)
            if fast is not None:
                try:
                    if fast(self, req.id, req.d):
                        return
                except RequestError:
                    pass  # the async handler decides (a retried cid gets its original ack)
        self._enqueue(req, size)

    def _before_auth(self, req: Request) -> None:
        if req.op != "auth":
            self.close_soon(Close.NOT_AUTHENTICATED, "the first request must be auth")
            return
        self.worker = asyncio.get_running_loop().create_task(self._authenticate(req))

    def _enqueue(self, req: Request, size: int) -> None:
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        if len(queue) >= MAX_QUEUED or self.queued_bytes + size > MAX_QUEUED_BYTES:
            self.close_soon(Close.FLOOD, "too many requests waiting")
            return
        queue.append((req, size))
        self.queued_bytes += size
        if self.queued_bytes > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())

    async def _bus_ready(self) -> None:
        """Wait until the bus delivers this socket's conversations (one wait per channel)."""
        bus = self.svc.bus
        keys = {bus.channel(k): k for k in ("u:" + self.user, *("c:" + conv for conv in self.convs))}
        await asyncio.gather(*(bus.ready(k) for k in keys.values()))

    async def _work(self) -> None:
        try:
            while self.queue and self.state is State.OPEN:
                req, size = self.queue.popleft()
                if not self.queue:
                    self.queue = None
                self.queued_bytes -= size
                if self.paused and self.queued_bytes < LOW_WATER:
                    self.paused = False
                    self.transport.resume_reading()
                await self._dispatch(req)
        finally:
            self.worker = None

    async def _authenticate(self, req: Request) -> None:
        try:
            cfg = self.svc.config
            try:
                check_args("auth", req.d)
                identity = verify_token(req.d["token"], cfg.signing_secret)
            except RequestError:
                self.close_soon(Close.AUTH_FAILED, "auth needs a token")
                return
            except AuthError as exc:
                self.close_soon(exc.code, exc.reason)
                return
            # Register before reading the memberships: a join, leave or dm.open
            # that commits while we read then reaches this socket too (``left``
            # keeps the snapshot from re-adding a conversation left meanwhile).
            self.user = identity.id
            shared = self.svc.bus.shared
            # Another node's commits do not move our pipeline's head: read the
            # store's before registering (a lower pos only means a longer sync).
            pos = await head(self.svc.store) if shared else 0
            self.left = set()
            self.svc.hub.register(self)
            if shared:  # a join or leave on another node from now on reaches us
                await self.svc.bus.ready("u:" + identity.id)
            convs = await user_convs(self.svc.store, identity.id)
            if self.state is not State.AWAIT_AUTH or self.proto.state is not WsState.OPEN or self.svc.draining:
                return
            # From here on synchronously: follow, then read the head position.
            # Every commit after this point reaches us as a push; every commit
            # before it is at or below ``pos`` (so sync from ``pos`` is whole).
            for conv in convs:
                if conv not in self.left:
                    self.svc.hub.follow(self, conv)
            self.left = None
            if shared:  # pushes from other nodes reach us from here on
                await self._bus_ready()
                if self.state is not State.AWAIT_AUTH or self.proto.state is not WsState.OPEN:
                    return
            else:
                pos = self.svc.pipeline.head
            self.identity = identity
            self.author = identity.author()
            self.state = State.OPEN
            loop = asyncio.get_running_loop()
            if self.auth_timer is not None:
                self.auth_timer.cancel()
            self.auth_timer = loop.call_at(
                loop.time() + max(0.0, identity.exp - self.svc.now_ms() / 1000), self._token_expired
            )
            self.svc.metrics.connections.inc()
            self.svc.presence.opened(self)
            self.reply(
                req.id,
                {
                    "user": identity.user(),
                    "pos": pos,
                    "server_time": self.svc.now_ms(),
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
            return
        finally:
            self.worker = None
        if self.queue:  # requests that arrived during auth, in order
            self.worker = asyncio.get_running_loop().create_task(self._work())

    async def _dispatch(self, req: Request) -> None:
        if self.svc.draining:
            self.error(req.id, RequestError(Err.UNAVAILABLE, "server is draining; retry after reconnecting"))
            return
        try:
            check_args(req.op, req.d)
            result = await self.handlers[req.op](self, req.id, req.d)
            if result is not None:
                self.reply(req.id, result)
        except RequestError as exc:
            self.error(req.id, exc)
        except StoreUnavailable:
            self.error(req.id, RequestError(Err.UNAVAILABLE, "the store is unavailable; retry"))
        except Exception:
            log.exception("op %s failed for %s", req.op, self.user)
            self.error(req.id, RequestError(Err.INTERNAL, "internal error"))

    # -- output ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue one complete frame for this socket (see _send for the cap)."""
        if self.state is not State.OPEN or self.proto.state is not WsState.OPEN:
            return
        if self.out.corked:
            if self.pending and self.pending_size + len(data) > self.svc.config.out_buffer:
                self.flush()  # bound what is held back; slowness is judged in _send
                if self.state is not State.OPEN:
                    return
            self.pending_size += len(data)
            if self.pending is None:
                self.pending = [data]
                self.out.dirty.append(self)
            else:
                self.pending.append(data)
            return
        self._send(data)

    def flush(self) -> None:
        """Hand the frames held while corked to the transport in one write."""
        pending, self.pending = self.pending, None
        self.pending_size = 0
        if pending and self.state is State.OPEN and self.proto.state is WsState.OPEN:
            self._send(pending[0] if len(pending) == 1 else b"".join(pending))

    def _send(self, data: bytes) -> None:
        """Close as slow consumer when the bytes already queued (not yet taken by
        the kernel) are past the cap. A frame is always accepted below the cap,
        so one large reply never counts as slowness. Memory per socket stays
        under twice the cap plus one frame (the transport's buffer, plus frames
        held while corked, which are handed over early past the cap)."""
        transport = self.transport
        if transport.get_write_buffer_size() > self.svc.config.out_buffer:
            self.slow()
            return
        transport.write(data)

    def reply(self, rid: Any, d: dict[str, Any]) -> None:
        self.write(wsframe.frame(self.codec.dumps({"id": rid, "d": d}), self.codec.text))

    def error(self, rid: Any, exc: RequestError) -> None:
        self.svc.metrics.errors.labels(exc.code.value).inc()
        err: dict[str, Any] = {"code": exc.code.value, "message": exc.message, "temporary": exc.temporary}
        if exc.retry_after_ms is not None:
            err["retry_after_ms"] = exc.retry_after_ms
        self.write(wsframe.frame(self.codec.dumps({"id": rid, "error": err}), self.codec.text))

    def slow(self) -> None:
        """Outbound buffer over its cap: stop pushing to this socket and close it
        with 4001 so the client reconnects and catches up with ``sync``."""
        if self.state is State.OPEN:
            self.close_soon(Close.SLOW_CONSUMER, "slow consumer")

    def sent(self) -> None:
        """A send of this socket got its reply (ack or error)."""
        self.inflight -= 1
        if not self.inflight and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def close_soon(self, code: int, reason: str) -> None:
        """Close from synchronous code. Input stops now; requests accepted before
        are still answered (protocol violations, flood) unless the close is for
        slowness, which stops all output at once."""
        if self.closing or self.state is State.CLOSED:
            return
        self.closing = True
        if code == Close.SLOW_CONSUMER:
            self._leave()
        asyncio.get_running_loop().create_task(self._close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        if self.closing:  # already under way
            return
        self.closing = True
        await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        self.svc.metrics.closes.labels(str(code)).inc()
        if self.state is State.OPEN:
            # answer what was accepted before the close: queued requests, and
            # sends whose commit is still under way
            try:
                async with asyncio.timeout(self.svc.config.drain_timeout):
                    if self.worker is not None:
                        await asyncio.shield(self.worker)
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
