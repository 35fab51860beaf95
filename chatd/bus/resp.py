"""A minimal RESP2 connection for the bus's two hot paths: PUBLISH and a subscriber.

Why not redis-py for these: at a few hundred envelopes a second each PUBLISH
through redis-py costs 65-130 µs of CPU on the publishing node (a task, a pooled
connection, an awaited reply) and each received envelope 37-60 µs
(``get_message`` with its timeout machinery) — bench/buscost.py. Here a PUBLISH is
one ``transport.write`` whose integer reply is counted in ``data_received``, and a
subscriber's messages are parsed and handed over in ``data_received``: no task,
no future, no timer per envelope. Everything else (presence, the points stream)
stays on redis-py.

Supports ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) and
``unix://[[user]:password@]/path``. Pub/sub ignores the database number.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

Value = Any  # bytes | int | list[Value] | RespError | None


class RespError(Exception):
    """An error reply (``-ERR ...``)."""


class ProtocolError(Exception):
    """Bytes that are not RESP2: the connection is dropped."""


_NEED = object()  # the buffer holds no complete value yet


def pack(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else str(a).encode() if isinstance(a, int) else a
        parts.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


def parse(buf: bytes | bytearray, pos: int) -> tuple[Value, int]:
    """The value starting at ``pos`` and the position after it, or ``(_NEED, pos)``."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return _NEED, pos
    t = buf[pos]
    line = buf[pos + 1 : end]
    if t == 0x24:  # $ bulk string
        n = int(line)
        if n < 0:
            return None, end + 2
        start = end + 2
        if len(buf) < start + n + 2:
            return _NEED, pos
        return bytes(buf[start : start + n]), start + n + 2
    if t == 0x2A:  # * array
        n = int(line)
        if n < 0:
            return None, end + 2
        items = []
        p = end + 2
        for _ in range(n):
            v, p = parse(buf, p)
            if v is _NEED:
                return _NEED, pos
            items.append(v)
        return items, p
    if t == 0x3A:  # : integer
        return int(line), end + 2
    if t == 0x2B:  # + simple string
        return bytes(line), end + 2
    if t == 0x2D:  # - error
        return RespError(bytes(line).decode(errors="replace")), end + 2
    raise ProtocolError(f"unexpected RESP type byte {t!r}")


class RespConnection(asyncio.Protocol):
    """One connection. ``call`` awaits a reply; ``write``/``send`` do not (their
    replies go to ``on_reply``). With ``on_push`` set (a subscriber), every value
    received goes there instead.

    ``written`` counts the commands sent with ``write``/``send``; ``confirmed``
    how many of them Redis is known to have processed (each reply, or with
    replies off, each ``checkpoint``'s answer), so ``unconfirmed`` is what a
    connection lost now may have lost."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        # what each expected reply is for: a ``call``'s future, None (a write's
        # reply, to on_reply) or an int (a checkpoint: ``written`` when it was sent)
        self._waiting: deque[asyncio.Future[Value] | int | None] = deque()
        self.on_push: Callable[[Value], None] | None = None
        self.on_reply: Callable[[Value], None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reason = ""
        self.written = 0
        self.confirmed = 0
        self.unconfirmed_at_close = 0
        self.replies = True  # False after CLIENT REPLY OFF
        self.heard = time.monotonic()  # when bytes last arrived
        self.waiting_since = 0.0  # when the oldest expected reply was asked for (about)

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's are not asyncio.Transport subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.heard = time.monotonic()
        buf = self._buf
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                value, nxt = parse(buf, pos)
                if value is _NEED:
                    break
                pos = nxt
                self._dispatch(value)
        except (ProtocolError, ValueError) as exc:
            self.close(f"bad reply from Redis: {exc}")
            return
        del buf[:pos]

    def _dispatch(self, value: Value) -> None:
        if self.on_push is not None:
            self.on_push(value)
            return
        if not self._waiting:
            raise ProtocolError("a reply nobody asked for")
        what = self._waiting.popleft()
        self.waiting_since = self.heard
        if what is None:
            self.confirmed += 1
            if self.on_reply is not None:
                self.on_reply(value)
        elif isinstance(what, int):
            if isinstance(value, RespError):
                raise ProtocolError(f"checkpoint refused: {value}")
            self.confirmed = max(self.confirmed, what)
        elif not what.done():
            if isinstance(value, RespError):
                what.set_exception(value)
            else:
                what.set_result(value)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(f"connection lost: {exc}" if exc else "connection closed")

    def _closed(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason
            self.unconfirmed_at_close = self.unconfirmed
        if not self.closed.done():
            self.closed.set_result(None)
        while self._waiting:
            what = self._waiting.popleft()
            if isinstance(what, asyncio.Future) and not what.done():
                what.set_exception(ConnectionError(self.reason))

    # -- use -------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.closed.done()

    @property
    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    @property
    def unconfirmed(self) -> int:
        """Commands written that Redis is not known to have processed."""
        return self.written - self.confirmed

    @property
    def unanswered(self) -> int:
        """Replies (and checkpoint answers) expected and not arrived."""
        return len(self._waiting)

    def _expect(self, what: asyncio.Future[Value] | int | None) -> None:
        if not self._waiting:
            self.waiting_since = time.monotonic()
        self._waiting.append(what)

    def write(self, data: bytes, commands: int) -> None:
        """``commands`` packed commands; replies (if on) go to ``on_reply``."""
        if not self.is_open:
            raise ConnectionError(self.reason or "not connected")
        assert self.transport is not None
        if self.on_push is None and self.replies:
            for _ in range(commands):
                self._expect(None)
        self.written += commands
        self.transport.write(data)

    def send(self, *args: bytes | str | int) -> None:
        self.write(pack(*args), 1)

    async def replies_off(self) -> bool:
        """``CLIENT REPLY OFF``: Redis stops answering commands on this connection
        (a publisher then costs Redis no reply and itself no wakeup per PUBLISH;
        ``checkpoint`` confirms what was written). False, and replies stay on,
        where the server does not support it."""
        # OFF (silent where supported), ON (+OK), PING (+PONG): exactly those two
        # answers, or the server does not do REPLY OFF and replies stay on
        if not self.is_open or self._waiting:
            raise ConnectionError(self.reason or "not connected or busy")
        assert self.transport is not None
        got: list[Value] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def collect(value: Value) -> None:
            got.append(value)
            if value == b"PONG" and not done.done():
                done.set_result(None)

        self.on_push = collect
        try:
            self.transport.write(pack("CLIENT", "REPLY", "OFF") + pack("CLIENT", "REPLY", "ON") + pack("PING"))
            closed = asyncio.ensure_future(asyncio.shield(self.closed))
            await asyncio.wait({done, closed}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if not done.done():
                raise ConnectionError(self.reason)
        finally:
            self.on_push = None
        if got != [b"OK", b"PONG"]:
            return False
        self.transport.write(pack("CLIENT", "REPLY", "OFF"))
        self.replies = False
        return True

    def checkpoint(self) -> None:
        """With replies off: ask Redis to confirm everything written so far
        (``CLIENT REPLY ON`` answers +OK once every earlier command is processed;
        replies go off again right after)."""
        if self.replies or not self.is_open:
            return
        assert self.transport is not None
        self._expect(self.written)
        self.transport.write(pack("CLIENT", "REPLY", "ON") + pack("CLIENT", "REPLY", "OFF"))

    async def confirm(self) -> None:
        """Wait until Redis has processed everything written so far (replies are
        on afterwards)."""
        if not self.is_open:
            raise ConnectionError(self.reason or "not connected")
        # PING, or with replies off CLIENT REPLY ON: answered after every earlier command
        data = pack("PING") if self.replies else pack("CLIENT", "REPLY", "ON")
        self.replies = True
        await self._ask(data)
        self.confirmed = self.written

    async def call(self, *args: bytes | str | int) -> Value:
        """A command and its reply (replies must be on)."""
        if not self.replies:
            raise RuntimeError("call() on a connection with replies off")
        if not self.is_open:
            raise ConnectionError(self.reason or "not connected")
        return await self._ask(pack(*args))

    async def _ask(self, data: bytes) -> Value:
        """Write one command and wait for its answer (the connection is open)."""
        assert self.transport is not None
        fut: asyncio.Future[Value] = asyncio.get_running_loop().create_future()
        self._expect(fut)
        self.transport.write(data)
        return await fut

    def close(self, reason: str = "closed", flush: bool = False) -> None:
        """Close now (``flush``: after writing what is buffered)."""
        self._closed(reason)
        if self.transport is not None:
            if flush:
                self.transport.close()
            else:
                self.transport.abort()


async def connect(url: str, within: float = 1.0) -> RespConnection:
    """A connection to ``url``, authenticated; ConnectionError/OSError if not."""
    u = urlsplit(url)
    loop = asyncio.get_running_loop()
    conn = RespConnection()
    try:
        if u.scheme == "unix":
            await asyncio.wait_for(loop.create_unix_connection(lambda: conn, u.path), within)
        elif u.scheme in ("redis", "rediss"):
            ctx = ssl.create_default_context() if u.scheme == "rediss" else None
            await asyncio.wait_for(
                loop.create_connection(lambda: conn, u.hostname or "localhost", u.port or 6379, ssl=ctx), within
            )
        else:
            raise ValueError(f"not a Redis URL: {url!r}")
    except TimeoutError as exc:
        raise ConnectionError(f"no connection to Redis within {within} s") from exc
    try:
        if u.password is not None:
            user = unquote(u.username) if u.username else None
            args = ("AUTH", user, unquote(u.password)) if user else ("AUTH", unquote(u.password))
            await asyncio.wait_for(conn.call(*args), within)
    except (RespError, TimeoutError) as exc:
        conn.close(f"AUTH failed: {exc!r}")
        raise ConnectionError(f"Redis refused AUTH: {exc!r}") from exc
    except BaseException:  # cancelled: no transport left open
        conn.close("cancelled")
        raise
    return conn
