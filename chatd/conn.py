"""One connection: its states, decode -> dispatch, and its bounded outbound path.

All of a session's transitions live here (h11's ``_state.py`` idea)::

    AWAIT_AUTH --auth ok--> OPEN --(peer close | server close)--> CLOSED
        |  no auth in time      -> close 4100
        |  other op first       -> close 4103
        |  bad / expired token  -> close 4101 / 4102
        |  undecodable frame    -> close 4200 / 4201
    OPEN: undecodable frame -> close 4200/4201; flood -> 4202;
          outbound buffer over cap -> 4001 (slow consumer); drain -> 4000

Frames to the client are written straight to the transport as complete,
unmasked WebSocket frames (see wsframe.py): never awaited, so a push to
thousands of sockets costs one ``transport.write`` each.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING, Any

from chatd_protocol import (
    Close,
    Codec,
    Err,
    FrameError,
    RequestError,
    check_args,
    decode_request,
)
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State as WsState

from . import wsframe
from .auth import AuthError, Identity, verify_token
from .limits import TokenBucket
from .store import StoreUnavailable
from .store.conversations import user_convs

if TYPE_CHECKING:
    from .ops import Handler
    from .services import Services

log = logging.getLogger("chatd.conn")


class State(enum.Enum):
    AWAIT_AUTH = "await_auth"
    OPEN = "open"
    CLOSED = "closed"


class Conn:
    __slots__ = (
        "author",
        "bucket",
        "codec",
        "convs",
        "identity",
        "ops",
        "out",
        "pending",
        "proto",
        "slot",
        "state",
        "strikes",
        "svc",
        "transport",
        "user",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        svc: Services,
        codec: Codec,
        slot: int,
        ops: dict[str, Handler],
    ) -> None:
        self.ws = ws
        self.transport = ws.transport
        self.proto = ws.protocol
        self.svc = svc
        self.codec = codec
        self.slot = slot
        self.state = State.AWAIT_AUTH
        self.identity: Identity | None = None
        self.user = ""
        self.convs: set[str] = set()
        self.bucket = TokenBucket(svc.config.request_rate, svc.config.request_burst, svc.monotonic())
        self.strikes = 0
        self.ops = ops
        self.out = svc.output
        self.pending: list[bytes] | None = None  # frames held while output is corked
        self.author: dict[str, Any] = {}  # the identity's snapshot carried by its messages

    # -- lifecycle -------------------------------------------------------------

    async def run(self) -> None:
        try:
            if not await self._authenticate():
                return
            try:
                async for data in self.ws:
                    if self.state is not State.OPEN:
                        break
                    await self._handle(data)
            finally:
                self._leave()
        except ConnectionClosed:
            pass
        finally:
            self._leave()

    def _leave(self) -> None:
        if self.state is State.OPEN:
            self.svc.hub.remove(self)
            self.svc.metrics.connections.dec()
        self.state = State.CLOSED

    async def _authenticate(self) -> bool:
        cfg = self.svc.config
        try:
            data = await asyncio.wait_for(self.ws.recv(), cfg.auth_timeout)
        except TimeoutError:
            await self.close(Close.AUTH_TIMEOUT, "no auth request in time")
            return False
        try:
            req = decode_request(self.codec, data)
        except FrameError as exc:
            await self.close(exc.code, exc.reason)
            return False
        except RequestError:
            await self.close(Close.BAD_FRAME, "malformed request")
            return False
        if req.op != "auth":
            await self.close(Close.NOT_AUTHENTICATED, "the first request must be auth")
            return False
        try:
            check_args("auth", req.d)
            identity = verify_token(req.d["token"], cfg.signing_secret)
        except RequestError:
            await self.close(Close.AUTH_FAILED, "auth needs a token")
            return False
        except AuthError as exc:
            await self.close(exc.code, exc.reason)
            return False
        convs = await user_convs(self.svc.store, identity.id)
        if self.proto.state is not WsState.OPEN or self.svc.draining:
            return False
        # From here on synchronously: follow conversations, then read the head
        # position. Every commit after this point reaches us as a push; every
        # commit before it is at or below ``pos`` (so sync from ``pos`` is whole).
        self.identity = identity
        self.user = identity.id
        self.author = identity.author()
        self.state = State.OPEN
        self.svc.hub.add(self, convs)
        self.svc.metrics.connections.inc()
        self.reply(
            req.id,
            {
                "user": identity.user(),
                "pos": self.svc.pipeline.head,
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
        return True

    async def _handle(self, data: str | bytes) -> None:
        try:
            req = decode_request(self.codec, data)
        except FrameError as exc:
            await self.close(exc.code, exc.reason)
            return
        except RequestError as exc:
            self.error(exc.request_id if exc.request_id is not None else 0, exc)
            return
        wait = self.bucket.take(self.svc.monotonic())
        if wait:
            self.strikes += 1
            if self.strikes >= self.svc.config.flood_strikes:
                await self.close(Close.FLOOD, "request flood")
                return
            self.error(
                req.id, RequestError(Err.RATE_LIMITED, "request rate exceeded", retry_after_ms=int(wait * 1000) + 1)
            )
            return
        self.strikes = 0
        if self.svc.draining:
            self.error(req.id, RequestError(Err.UNAVAILABLE, "server is draining; retry after reconnecting"))
            return
        try:
            check_args(req.op, req.d)
            handler = self.ops[req.op]
            result = await handler(self, req.id, req.d)
            if result is not None:
                self.reply(req.id, result)
        except RequestError as exc:
            self.error(req.id, exc)
        except StoreUnavailable:
            self.error(req.id, RequestError(Err.UNAVAILABLE, "the store is unavailable; retry"))
        except ConnectionClosed:
            raise
        except Exception:
            log.exception("op %s failed for %s", req.op, self.user)
            self.error(req.id, RequestError(Err.INTERNAL, "internal error"))

    # -- output ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue one complete frame; close as slow consumer when the bytes already
        queued (not yet taken by the kernel) are past the cap. A frame is always
        accepted below the cap, so one large reply never counts as slowness and
        memory per socket stays under cap + one frame."""
        if self.state is not State.OPEN or self.proto.state is not WsState.OPEN:
            return
        if self.out.corked:
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
        if pending and self.state is State.OPEN and self.proto.state is WsState.OPEN:
            self._send(pending[0] if len(pending) == 1 else b"".join(pending))

    def _send(self, data: bytes) -> None:
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
            self._leave()
            asyncio.get_running_loop().create_task(self.close(Close.SLOW_CONSUMER, "slow consumer"))

    async def close(self, code: int, reason: str) -> None:
        self.svc.metrics.closes.labels(str(code)).inc()
        self._leave()
        try:
            await self.ws.close(code, reason)
        except Exception:  # the transport may already be gone
            self.transport.abort()
