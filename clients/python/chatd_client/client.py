"""The chatd client: one WebSocket, requests, pushes, reconnect and catch-up.

Three tasks share one :class:`Client`:

* the **reader** (one per socket) decodes frames: replies resolve the future of
  their request, pushes go to the *inbox* queue;
* the **supervisor** owns the socket's life: when it closes it decides by close
  code (protocol/README.md §8) whether to reconnect, fetch a new token or stop,
  and after each reconnect puts a *catch-up marker* in the inbox;
* the **deliverer** consumes the inbox in order. A marker makes it ``sync`` from
  the last ``pos``; pushes that arrive meanwhile wait behind the marker in the
  inbox, so they are merged after the catch-up. Every message goes through
  :class:`~chatd_client.ordering.Ordering` (dedup, seq order, gaps filled with
  ``history``, see ``delivery.py``) before it reaches :meth:`Client.events`.

Requests wait until a socket is authenticated. If the socket drops before the
reply, idempotent ops (reads, ``send`` with its ``cid``, ...) are sent again
after the reconnect; the others raise :class:`ConnectionLost`, since they may or
may not have been applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeAlias

from chatd_protocol import (
    CODECS,
    JSON,
    MSGPACK,
    RETRY_SAFE,
    Codec,
    ErrorReply,
    FrameError,
    Push,
    Request,
    RequestError,
    RequestId,
    ServerFrame,
    check_args,
    close_action,
    decode_server_frame,
    encode,
)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from .delivery import Delivery
from .errors import AuthError, ChatError, ClientClosed, ConnectError, ConnectionLost

log = logging.getLogger("chatd_client")

Event: TypeAlias = Push  # what events() yields: Event.type ("msg", "read", ...) and Event.d
TokenProvider = Callable[[], str | Awaitable[str]]

#: Ops that may be sent twice without doing anything twice, from the protocol's
#: op table (``send`` is one because the server deduplicates on its ``cid``;
#: ``read`` never moves back).
IDEMPOTENT_OPS = RETRY_SAFE
TEMPORARY_CODES = frozenset({"rate_limited", "unavailable", "internal"})
_STABLE_AFTER_S = 5.0  # a connection that lived this long resets the backoff


class _Transient(Exception):
    """An attempt to connect failed in a way worth retrying."""


class _Dropped(Exception):
    """The socket carrying a request closed before its reply."""


class _CatchUp:
    """Inbox marker: a new socket is authenticated, sync before the next push."""


_CATCH_UP = _CatchUp()
_END = object()


class Client:
    """A chatd connection that survives disconnects.

    ``token`` is a static token; ``token_provider`` (sync or async callable) is
    called for the first token and again whenever the server asks for a new one
    (close codes 4100-4199). With only a static token, a refused token (4101,
    4102) stops the client with :class:`AuthError`.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_provider: TokenProvider | None = None,
        encoding: str = "msgpack",
        reconnect: bool = True,
        backoff_min: float = 0.2,
        backoff_max: float = 10.0,
        open_timeout: float = 10.0,
        send_retries: int = 8,
    ) -> None:
        if token is None and token_provider is None:
            raise ValueError("give a token or a token_provider")
        if encoding not in ("msgpack", "json"):
            raise ValueError("encoding must be 'msgpack' or 'json'")
        self.url = url
        self.reconnect = reconnect
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self.send_retries = send_retries
        self._token = token
        self._token_provider = token_provider
        self._codec: Codec = CODECS[MSGPACK if encoding == "msgpack" else JSON]

        #: the authenticated user ({"id", "name", "type", "badges", "roles"})
        self.user: dict[str, Any] = {}
        #: server limits from the auth reply (max_frame, max_text, ...)
        self.limits: dict[str, Any] = {}

        self._ws: ClientConnection | None = None
        self._online = asyncio.Event()  # set while self._ws is authenticated
        self._offline = asyncio.Event()  # set once the reader saw self._ws close
        self._pending: dict[RequestId, tuple[ClientConnection, asyncio.Future[ServerFrame]]] = {}
        self._next_id = 0
        self._inbox: asyncio.Queue[Push | _CatchUp] = asyncio.Queue()
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._delivery = Delivery(self._call_idempotent, lambda m: self._events.put_nowait(Push("msg", m)))
        self._pos: int | None = None  # sync position from the last auth (first) / sync
        self._auth_pos: int | None = None  # pos of the latest auth reply
        self._supervisor: asyncio.Task[None] | None = None
        self._deliverer: asyncio.Task[None] | None = None
        self._closing = False  # close() called or stopped: no more reconnects
        self._finished = False
        self._error: ClientClosed | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket and authenticate; raise if that fails.

        Raises :class:`AuthError` (token refused), :class:`ConnectError`
        (network, handshake), :class:`ClientClosed` (server closed for good) or
        :class:`ChatError` (auth answered with an error).
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
        self._pos = self._auth_pos  # baseline: no replay of older history
        self._supervisor = asyncio.create_task(self._supervise(ws), name="chatd-supervisor")
        self._deliverer = asyncio.create_task(self._deliver(), name="chatd-deliverer")

    async def close(self) -> None:
        """Close the socket and stop; :meth:`events` ends after what was delivered."""
        if self._closing:
            return
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        tasks = [t for t in (self._supervisor, self._deliverer) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._finish(None)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._online.is_set()

    async def events(self) -> AsyncIterator[Event]:
        """Pushes for the application, in order: ``msg`` (exactly once, in seq
        order per conversation, across reconnects), ``read`` and any other push.

        Ends after :meth:`close`; raises :class:`ClientClosed` if the client
        stopped because of the server (e.g. :class:`AuthError`).
        """
        while True:
            item = await self._events.get()
            if item is _END:
                self._events.put_nowait(_END)  # other iterators end too
                if self._error is not None:
                    raise self._error
                return
            yield item

    # -- requests ----------------------------------------------------------------

    async def request(self, op: str, **d: Any) -> dict[str, Any]:
        """Send one request and return the reply's ``d``; raise :class:`ChatError`
        on an error reply. ``None`` arguments are left out."""
        args = {k: v for k, v in d.items() if v is not None}
        return await self._call(op, args, idempotent=op in IDEMPOTENT_OPS)

    async def ping(self) -> dict[str, Any]:
        return await self.request("ping")

    async def dm_open(self, user: str) -> dict[str, Any]:
        return await self.request("dm.open", user=user)

    async def block(self, user: str) -> dict[str, Any]:
        return await self.request("block", user=user)

    async def unblock(self, user: str) -> dict[str, Any]:
        return await self.request("unblock", user=user)

    async def circle_create(
        self,
        name: str,
        category: str,
        description: str | None = None,
        certified: bool | None = None,
    ) -> dict[str, Any]:
        return await self.request(
            "circle.create",
            name=name,
            category=category,
            description=description,
            certified=certified,
        )

    async def circle_list(
        self, category: str | None = None, after: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        return await self.request("circle.list", category=category, after=after, limit=limit)

    async def circle_join(self, conv: str) -> dict[str, Any]:
        return await self.request("circle.join", conv=conv)

    async def circle_leave(self, conv: str) -> dict[str, Any]:
        return await self.request("circle.leave", conv=conv)

    async def circle_role(self, conv: str, user: str, role: str) -> dict[str, Any]:
        return await self.request("circle.role", conv=conv, user=user, role=role)

    async def circle_announce(self, conv: str, text: str) -> dict[str, Any]:
        return await self.request("circle.announce", conv=conv, text=text)

    async def circle_mute(self, conv: str, user: str, seconds: int) -> dict[str, Any]:
        return await self.request("circle.mute", conv=conv, user=user, seconds=seconds)

    async def members(self, conv: str, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return await self.request("members", conv=conv, after=after, limit=limit)

    async def send(
        self,
        conv: str,
        text: str,
        cid: str | None = None,
        mentions: list[str] | None = None,
        mention_all: bool | None = None,
    ) -> dict[str, Any]:
        """Send a text message and return its ack ``{conv, seq, pos, ts, dup}``.

        Dropped connections and temporary errors are retried with the same
        ``cid``, so the message is created at most once (a retry that the server
        had already applied comes back with ``dup: true``).
        """
        return await self.request(
            "send",
            conv=conv,
            cid=cid or uuid.uuid4().hex,
            text=text,
            mentions=mentions,
            mention_all=mention_all,
        )

    async def points_balance(self) -> dict[str, Any]:
        """``{points, cv}``: spendable points and contribution value."""
        return await self.request("points.balance")

    async def points_ledger(self, before: int | None = None, limit: int | None = None) -> dict[str, Any]:
        return await self.request("points.ledger", before=before, limit=limit)

    async def points_top(self, limit: int | None = None) -> dict[str, Any]:
        return await self.request("points.top", limit=limit)

    async def tip(self, conv: str, seq: int, amount: int, tid: str | None = None) -> dict[str, Any]:
        """Tip the author of message ``seq`` in ``conv`` with ``amount`` points;
        retried under the same ``tid``, so points move once."""
        return await self.request("tip", conv=conv, seq=seq, amount=amount, tid=tid or uuid.uuid4().hex)

    async def red_packet(
        self, conv: str, total: int, shares: int, split: str = "random", rid: str | None = None
    ) -> dict[str, Any]:
        """Send a red packet of ``total`` points in ``shares`` ("random" or "equal")."""
        return await self.request(
            "redpacket.send", conv=conv, total=total, shares=shares, split=split, rid=rid or uuid.uuid4().hex
        )

    async def claim(self, packet: str) -> dict[str, Any]:
        """Claim a share of red packet ``packet``: ``{id, amount, left, dup}``."""
        return await self.request("redpacket.claim", id=packet)

    async def recall(self, conv: str, seq: int) -> dict[str, Any]:
        return await self.request("recall", conv=conv, seq=seq)

    async def history(self, conv: str, before: int | None = None, limit: int | None = None) -> dict[str, Any]:
        return await self.request("history", conv=conv, before=before, limit=limit)

    async def read(self, conv: str, seq: int) -> dict[str, Any]:
        return await self.request("read", conv=conv, seq=seq)

    async def sync(self, since: int, limit: int | None = None) -> dict[str, Any]:
        """Raw ``sync``. The client already syncs after each reconnect and feeds
        :meth:`events`; messages returned here bypass that."""
        return await self.request("sync", since=since, limit=limit)

    async def convs(self, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return await self.request("convs", after=after, limit=limit)

    async def presence_sub(self, users: list[str]) -> list[dict[str, Any]]:
        """Subscribe to users' presence; returns their current states. Changes
        arrive from :meth:`events` as ``presence`` pushes. Subscriptions belong
        to a socket: call again after a reconnect."""
        reply = await self.request("presence.sub", users=users)
        states: list[dict[str, Any]] = reply["presence"]
        return states

    async def presence_unsub(self, users: list[str]) -> dict[str, Any]:
        return await self.request("presence.unsub", users=users)

    async def presence_set(self, status: str | None = None, on_duty: bool | None = None) -> dict[str, Any]:
        """This device's presence: ``status`` "online"/"away"; ``on_duty`` (staff)."""
        return await self.request("presence.set", status=status, on_duty=on_duty)

    async def typing(self, conv: str) -> dict[str, Any]:
        """Tell ``conv``'s members this user is typing (throttled by the server)."""
        return await self.request("typing", conv=conv)

    async def _call(self, op: str, d: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        try:
            check_args(op, d)  # refuse locally what the server would refuse
        except RequestError as exc:
            raise ChatError(str(exc.code), exc.message) from None
        attempt = 0
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
                try:
                    frame = await fut
                except _Dropped:
                    if not idempotent:
                        raise ConnectionLost(
                            f"connection lost before the reply to {op!r}; it may have been applied"
                        ) from None
                    continue
            finally:
                self._pending.pop(rid, None)
            if not isinstance(frame, ErrorReply):
                reply: dict[str, Any] = frame.d
                return reply
            err = ChatError(frame.code, frame.message, frame.temporary, frame.retry_after_ms)
            if not (idempotent and frame.code in TEMPORARY_CODES and attempt < self.send_retries):
                raise err
            if frame.retry_after_ms is not None:
                delay = frame.retry_after_ms / 1000
            else:
                delay = self._backoff(attempt)
            attempt += 1
            log.info("%s: %s, retrying in %.2fs", op, err, delay)
            await asyncio.sleep(delay)

    async def _call_idempotent(self, op: str, d: dict[str, Any]) -> dict[str, Any]:
        return await self._call(op, d, idempotent=True)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _send(self, ws: ClientConnection, frame: Request) -> None:
        await ws.send(encode(self._codec, frame), text=self._codec.text)

    async def _wait_online(self) -> ClientConnection:
        while True:
            if self._error is not None:
                raise self._error
            if self._closing:
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

    # -- connection --------------------------------------------------------------

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
                        self._inbox.put_nowait(frame)
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
        self._delivery.me = self.user.get("id")
        self.limits = frame.d.get("limits", {})
        self._auth_pos = frame.d.get("pos")
        self._ws = ws
        self._offline.clear()
        self._online.set()
        log.info("connected to %s as %s", self.url, self.user.get("id"))
        return ws

    async def _supervise(self, ws: ClientConnection) -> None:
        attempt = 0
        while True:
            opened = time.monotonic()
            code, reason = await self._read(ws)
            if self._closing:
                return
            action = close_action(code)
            log.info("disconnected: %s %s (%s)", code, reason, action)
            if action == "stop" or not self.reconnect:
                self._finish(ClientClosed(f"connection closed: {code} {reason}", code, reason))
                return
            if action == "reauth" and code in (4101, 4102) and self._token_provider is None:
                self._finish(AuthError(f"token refused: {code} {reason}", code, reason))
                return
            if time.monotonic() - opened >= _STABLE_AFTER_S:
                attempt = 0
            new_token = action == "reauth"
            while True:
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                try:
                    ws = await self._open(new_token)
                except AuthError as exc:
                    if self._token_provider is None:
                        self._finish(exc)
                        return
                    new_token = True
                except _Transient as exc:
                    log.info("reconnect failed: %s", exc)
                except ClientClosed as exc:
                    self._finish(exc)
                    return
                except ChatError as exc:
                    self._finish(ClientClosed(f"auth refused: {exc}"))
                    return
                else:
                    break
            self._inbox.put_nowait(_CATCH_UP)

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
                    self._inbox.put_nowait(frame)
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
                    fut.set_exception(_Dropped())
        return _close_code(ws)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_min * 2.0 ** min(attempt, 30))
        return max(self.backoff_min, ceiling * random.uniform(0.5, 1.0))

    def _finish(self, error: ClientClosed | None) -> None:
        """Stop for good: fail waiting requests, end events()."""
        if self._finished:
            return
        self._finished = True
        self._error = error
        self._closing = True
        self._online.set()  # wake _wait_online(), which raises
        exc: Exception = error or ClientClosed("client is closed")
        for _, fut in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
        self._events.put_nowait(_END)
        if error is not None:
            log.warning("client stopped: %s", error)
            if self._deliverer is not None and self._deliverer is not asyncio.current_task():
                self._deliverer.cancel()

    # -- delivery ----------------------------------------------------------------

    async def _deliver(self) -> None:
        while True:
            item = await self._inbox.get()
            try:
                if isinstance(item, _CatchUp):
                    if self._pos is None:
                        self._pos = self._auth_pos
                    else:
                        self._pos = await self._delivery.catch_up(self._pos, fallback=self._auth_pos)
                elif item.type == "msg":
                    await self._delivery.offer([item.d])
                elif item.type == "resync":
                    # the server's processes lost touch for a while: pushes may be
                    # missing; catch up as after a reconnect, then tell the app
                    # (its presence view may be stale)
                    since = self._pos if self._pos is not None else self._auth_pos
                    if since is not None:
                        self._pos = await self._delivery.catch_up(since, fallback=self._auth_pos)
                    self._events.put_nowait(item)
                else:
                    self._events.put_nowait(item)
            except ClientClosed:
                return
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("dropped malformed push %r: %r", item, exc)


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
