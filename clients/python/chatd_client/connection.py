"""The chatd client's socket layer: one authenticated WebSocket at a time, and
what to do when it closes.

:class:`Connection` opens a socket, authenticates on it and runs two jobs:

* the **reader** (one per socket) decodes frames: replies resolve the future of
  their request (:meth:`Connection.exchange`), pushes go to the *inbox* queue;
* the **supervisor** owns the socket's life: when it closes it decides by close
  code (protocol/README.md §8) whether to reconnect, fetch a new token or stop,
  and after each reconnect puts a *catch-up marker* (:data:`CATCH_UP`) in the
  inbox.

The inbox is consumed by the client's deliverer (``client.py``). Which requests
may be sent again after a drop is for the request API to decide: this layer only
resends a request that was never written, and raises :class:`Dropped` for one
whose socket closed before its reply.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from chatd_protocol import (
    Codec,
    ErrorReply,
    FrameError,
    Push,
    Request,
    RequestId,
    ServerFrame,
    close_action,
    decode_server_frame,
    encode,
)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from .errors import AuthError, ChatError, ClientClosed, ConnectError

log = logging.getLogger("chatd_client")

TokenProvider = Callable[[], str | Awaitable[str]]

_STABLE_AFTER_S = 5.0  # a connection that lived this long resets the backoff


class _Transient(Exception):
    """An attempt to connect failed in a way worth retrying."""


class Dropped(Exception):
    """The socket carrying a request closed before its reply."""


class CatchUp:
    """Inbox marker: a new socket is authenticated, sync before the next push."""


CATCH_UP = CatchUp()


class Connection:
    """The socket under a :class:`~chatd_client.client.Client`, kept open across
    disconnects until the server says stop or the client closes.

    ``on_auth(user)`` is called after each successful auth, ``on_stop(error)``
    once when the connection stops for good (``error`` is None after a close
    this side asked for).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        token_provider: TokenProvider | None,
        codec: Codec,
        reconnect: bool,
        backoff_min: float,
        backoff_max: float,
        open_timeout: float,
        on_auth: Callable[[dict[str, Any]], None],
        on_stop: Callable[[ClientClosed | None], None],
    ) -> None:
        self.url = url
        self.reconnect = reconnect
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self._token = token
        self._token_provider = token_provider
        self._codec = codec
        self._on_auth = on_auth
        self._on_stop = on_stop

        #: the authenticated user ({"id", "name", "type", "badges", "roles"})
        self.user: dict[str, Any] = {}
        #: server limits from the auth reply (max_frame, max_text, ...)
        self.limits: dict[str, Any] = {}
        self.auth_pos: int | None = None  # pos of the latest auth reply
        #: the server store's epoch from the latest auth reply: the name of the
        #: space ``pos`` values live in (a different one makes old positions void)
        self.epoch: str | None = None
        #: pushes and catch-up markers, in the order they came, for the deliverer
        self.inbox: asyncio.Queue[Push | CatchUp] = asyncio.Queue()
        self.closing = False  # close() called or stopped: no more reconnects
        self.error: ClientClosed | None = None  # why the server stopped it, if it did

        self._ws: ClientConnection | None = None
        self._online = asyncio.Event()  # set while self._ws is authenticated
        self._offline = asyncio.Event()  # set once the reader saw self._ws close
        self._pending: dict[RequestId, tuple[ClientConnection, asyncio.Future[ServerFrame]]] = {}
        self._next_id = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._finished = False

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._online.is_set()

    @property
    def supervisor(self) -> asyncio.Task[None] | None:
        """The supervisor task, once :meth:`start` succeeded."""
        return self._supervisor

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Open the first socket and authenticate, then supervise it.

        Raises as :meth:`Client.connect <chatd_client.client.Client.connect>` does.
        """
        if self._supervisor is not None:
            raise RuntimeError("connect() was already called")
        try:
            try:
                ws = await self._open(new_token=False)
            except AuthError:
                if self._token_provider is None:
                    raise
                ws = await self._open(new_token=True)  # once, with a fresh token
        except _Transient as exc:
            raise ConnectError(f"cannot connect to {self.url}: {exc}") from exc.__cause__
        self._supervisor = asyncio.create_task(self._supervise(ws), name="chatd-supervisor")

    async def hang_up(self) -> None:
        """No more reconnects; close the socket. :meth:`finish` follows."""
        self.closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    def finish(self, error: ClientClosed | None) -> None:
        """Stop for good: fail waiting requests, tell the owner (``on_stop``)."""
        if self._finished:
            return
        self._finished = True
        self.error = error
        self.closing = True
        self._online.set()  # wake _wait_online(), which raises
        exc: Exception = error or ClientClosed("client is closed")
        for _, fut in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
        if error is not None:
            log.warning("client stopped: %s", error)
        self._on_stop(error)

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_min * 2.0 ** min(attempt, 30))
        return max(self.backoff_min, ceiling * random.uniform(0.5, 1.0))

    # -- requests ----------------------------------------------------------------

    async def exchange(self, op: str, d: dict[str, Any]) -> ServerFrame:
        """Send one request once a socket is authenticated; return its reply.

        Raises :class:`Dropped` if the socket closed after the request was
        written and before its reply, :class:`ClientClosed` once stopped.
        """
        while True:
            ws = await self._wait_online()
            rid = self._new_id()
            fut: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
            self._pending[rid] = (ws, fut)
            try:
                try:
                    await self._send(ws, Request(rid, op, d))
                except ConnectionClosed:
                    await self._wait_offline(ws)
                    continue  # never written: safe to send again, whatever the op
                return await fut
            finally:
                self._pending.pop(rid, None)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _send(self, ws: ClientConnection, frame: Request) -> None:
        await ws.send(encode(self._codec, frame), text=self._codec.text)

    async def _wait_online(self) -> ClientConnection:
        while True:
            if self.error is not None:
                raise self.error
            if self.closing:
                raise ClientClosed("client is closed")
            ws = self._ws
            if ws is not None and self._online.is_set():
                return ws
            if self._supervisor is None:
                raise ClientClosed("client is not connected; call connect() first")
            await self._online.wait()

    async def _wait_offline(self, ws: ClientConnection) -> None:
        if self._ws is ws:
            await self._offline.wait()

    # -- socket ------------------------------------------------------------------

    async def _get_token(self, new: bool) -> str:
        if self._token is not None and not new:
            return self._token
        if self._token_provider is None:
            assert self._token is not None
            return self._token
        result = self._token_provider()
        token = await result if inspect.isawaitable(result) else result
        if not isinstance(token, str):
            raise TypeError("token_provider must return a str")
        self._token = token
        return token

    async def _open(self, new_token: bool) -> ClientConnection:
        """Open a socket and authenticate on it.

        Raises :class:`_Transient` (worth retrying), :class:`AuthError` (token
        refused), :class:`ClientClosed` (stop code) or :class:`ChatError`.
        """
        token = await self._get_token(new_token)
        try:
            ws = await ws_connect(
                self.url,
                subprotocols=[Subprotocol(self._codec.name)],
                compression=None,  # the protocol never negotiates permessage-deflate
                open_timeout=self.open_timeout,
                max_size=2**26,  # sync pages can exceed websockets' 1 MiB default
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise _Transient(str(exc) or type(exc).__name__) from exc
        try:
            if ws.subprotocol != self._codec.name:
                raise ClientClosed(f"server did not accept subprotocol {self._codec.name}")
            rid = self._new_id()
            await self._send(ws, Request(rid, "auth", {"token": token}))
            async with asyncio.timeout(self.open_timeout):
                while True:
                    frame = decode_server_frame(self._codec, await ws.recv())
                    if isinstance(frame, Push):
                        self.inbox.put_nowait(frame)
                    elif frame.id == rid:
                        break
        except ConnectionClosed:
            code, reason = _close_code(ws)
            action = close_action(code)
            if action == "reauth":
                raise AuthError(f"authentication refused: close {code} {reason}", code, reason) from None
            if action == "stop":
                raise ClientClosed(f"server closed the connection: {code} {reason}", code, reason) from None
            raise _Transient(f"closed during auth: {code} {reason}") from None
        except TimeoutError:
            await ws.close()
            raise _Transient("no auth reply") from None
        except BaseException:
            await ws.close()
            raise
        if isinstance(frame, ErrorReply):
            await ws.close()
            raise ChatError(frame.code, frame.message, frame.temporary, frame.retry_after_ms)
        self.user = frame.d.get("user", {})
        self._on_auth(self.user)
        self.limits = frame.d.get("limits", {})
        self.auth_pos = frame.d.get("pos")
        epoch = frame.d.get("epoch")
        self.epoch = epoch if isinstance(epoch, str) else None
        self._ws = ws
        self._offline.clear()
        self._online.set()
        log.info("connected to %s as %s", self.url, self.user.get("id"))
        return ws

    async def _supervise(self, ws: ClientConnection) -> None:
        attempt = 0
        while True:
            opened = time.monotonic()
            refresher = asyncio.create_task(self._keep_fresh(ws)) if self._token_provider is not None else None
            try:
                code, reason = await self._read(ws)
            finally:
                if refresher is not None:
                    refresher.cancel()
            if self.closing:
                return
            action = close_action(code)
            log.info("disconnected: %s %s (%s)", code, reason, action)
            if action == "stop" or not self.reconnect:
                self.finish(ClientClosed(f"connection closed: {code} {reason}", code, reason))
                return
            if action == "reauth" and code in (4101, 4102) and self._token_provider is None:
                self.finish(AuthError(f"token refused: {code} {reason}", code, reason))
                return
            if time.monotonic() - opened >= _STABLE_AFTER_S:
                attempt = 0
            new_token = action == "reauth"
            while True:
                await asyncio.sleep(self.backoff(attempt))
                attempt += 1
                try:
                    ws = await self._open(new_token)
                except AuthError as exc:
                    if self._token_provider is None:
                        self.finish(exc)
                        return
                    new_token = True
                except _Transient as exc:
                    log.info("reconnect failed: %s", exc)
                except ClientClosed as exc:
                    self.finish(exc)
                    return
                except ChatError as exc:
                    self.finish(ClientClosed(f"auth refused: {exc}"))
                    return
                else:
                    break
            self.inbox.put_nowait(CATCH_UP)

    async def _keep_fresh(self, ws: ClientConnection) -> None:
        """With a token provider: renew the socket's token (``auth.refresh``)
        before it expires, so a long-lived socket is never closed for expiry. A
        refusal is left to the expiry close and the reconnect with a new token."""
        while True:
            exp = _token_exp(self._token)
            if exp is None:
                return
            left = exp - time.time()
            await asyncio.sleep(max(1.0, min(left - 60.0, left * 0.9)))
            if self._ws is not ws:
                return
            try:
                token = await self._get_token(new=True)
                frame = await self.exchange("auth.refresh", {"token": token})
            except (Dropped, ClientClosed, ConnectionClosed):
                return
            except Exception as exc:  # the provider failed: try the reconnect's way later
                log.warning("token refresh failed: %r", exc)
                return
            if isinstance(frame, ErrorReply):
                log.warning("token refresh refused: %s", frame.message)
                return
            log.info("token renewed until %s", frame.d.get("exp"))

    async def _read(self, ws: ClientConnection) -> tuple[int, str]:
        """Read frames until the socket closes; return its close code and reason."""
        try:
            async for data in ws:
                try:
                    frame = decode_server_frame(self._codec, data)
                except FrameError as exc:
                    log.warning("undecodable frame from server: %s", exc.reason)
                    continue
                if isinstance(frame, Push):
                    self.inbox.put_nowait(frame)
                    continue
                entry = self._pending.get(frame.id)
                if entry is not None and entry[0] is ws and not entry[1].done():
                    entry[1].set_result(frame)
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            self._online.clear()
            self._offline.set()
            for sock, fut in list(self._pending.values()):
                if sock is ws and not fut.done():
                    fut.set_exception(Dropped())
        return _close_code(ws)


def _token_exp(token: str | None) -> float | None:
    """A JWT's ``exp``, read without verifying (the server verifies)."""
    if not token or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _close_code(ws: ClientConnection) -> tuple[int, str]:
    """The close code that tells what to do next.

    A close the server started carries its code. A close this side started
    outside :meth:`Client.close` (e.g. a test aborting the socket), or one with
    no close frame at all, counts as abnormal (1006): reconnect.
    """
    proto = ws.protocol
    rcvd = proto.close_rcvd
    if rcvd is not None and (proto.close_sent is None or proto.close_rcvd_then_sent):
        return rcvd.code, rcvd.reason
    return 1006, ""
