"""A tiny raw chatd client for the server tests (not the SDK in clients/python).

It speaks the wire protocol with ``chatd_protocol``'s codecs over
``websockets.asyncio.client``: requests get integer ids, replies resolve the
matching future, pushes go to a queue, and the close code is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from chatd_protocol import (
    CODECS,
    JSON,
    MSGPACK,
    ErrorReply,
    FrameError,
    Push,
    Reply,
    decode_server_frame,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

ENCODINGS = {"msgpack": MSGPACK, "json": JSON}
WAIT = 5.0


class ChatError(AssertionError):
    """A request expected to succeed got an error reply."""


class WsClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.codec = CODECS[ws.subprotocol] if ws.subprotocol in CODECS else None
        self.pushes: asyncio.Queue[Push] = asyncio.Queue()
        self.pending: dict[Any, asyncio.Future[Reply | ErrorReply]] = {}
        self.ids = itertools.count(1)
        self.user: dict[str, Any] | None = None
        self.pos = 0
        self.limits: dict[str, Any] = {}
        self.bad_frames: list[Any] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls,
        url: str,
        encoding: str | None = "msgpack",
        *,
        subprotocols: list[str] | None = None,
        **kwargs: Any,
    ) -> WsClient:
        if subprotocols is None:
            subprotocols = [ENCODINGS[encoding]] if encoding else []
        ws = await connect(
            url,
            subprotocols=[Subprotocol(s) for s in subprotocols] or None,
            compression=None,
            open_timeout=WAIT,
            close_timeout=2,
            ping_interval=None,
            max_size=None,
            **kwargs,
        )
        return cls(ws)

    # -- reading ---------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                assert self.codec is not None, "the server sent a frame on a socket without a chatd subprotocol"
                try:
                    frame = decode_server_frame(self.codec, data)
                except FrameError as exc:  # the server must never send these
                    self.bad_frames.append((exc, data))
                    continue
                if isinstance(frame, Push):
                    self.pushes.put_nowait(frame)
                else:
                    fut = self.pending.pop(frame.id, None)
                    if fut is None:
                        self.bad_frames.append(("reply to an unknown id", frame))
                    elif not fut.done():
                        fut.set_result(frame)
        except ConnectionClosed:
            pass
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"closed with {self.ws.close_code} before the reply"))
                    fut.exception()  # awaiting it still raises; unawaited, it is not an error to log
            self.pending.clear()

    # -- requests --------------------------------------------------------------

    def encode(self, frame: dict[str, Any]) -> bytes | str:
        assert self.codec is not None
        data = self.codec.dumps(frame)
        return data.decode() if self.codec.text else data

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.ws.send(self.encode(frame))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    def start(self, op: str, d: dict[str, Any] | None = None, *, rid: Any = None) -> asyncio.Future[Reply | ErrorReply]:
        """Send a request without waiting; returns the future of its reply."""
        rid = next(self.ids) if rid is None else rid
        fut: asyncio.Future[Reply | ErrorReply] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        frame: dict[str, Any] = {"id": rid, "op": op, "d": d or {}}
        asyncio.get_running_loop().create_task(self._send_quietly(frame))
        return fut

    async def _send_quietly(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.send_frame(frame)

    async def request(self, op: str, wait: float = WAIT, **d: Any) -> Reply | ErrorReply:
        """The reply or error reply to one request."""
        rid = next(self.ids)
        fut: asyncio.Future[Reply | ErrorReply] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        await self.send_frame({"id": rid, "op": op, "d": d})
        return await asyncio.wait_for(fut, wait)

    async def call(self, op: str, wait: float = WAIT, **d: Any) -> dict[str, Any]:
        """The reply's ``d``; an error reply fails the test."""
        frame = await self.request(op, wait, **d)
        if isinstance(frame, ErrorReply):
            raise ChatError(f"{op} {d!r} -> {frame.code}: {frame.message}")
        return frame.d

    async def fail(self, op: str, code: str, wait: float = WAIT, **d: Any) -> ErrorReply:
        """Assert ``op`` is refused with error ``code``; returns the error reply."""
        frame = await self.request(op, wait, **d)
        assert isinstance(frame, ErrorReply), f"{op} {d!r} should fail with {code}, got {frame}"
        assert frame.code == code, f"{op} {d!r}: expected {code}, got {frame.code} ({frame.message})"
        assert frame.message
        return frame

    async def auth(self, token: str) -> dict[str, Any]:
        d = await self.call("auth", token=token)
        self.user = d["user"]
        self.pos = d["pos"]
        self.limits = d["limits"]
        return d

    # -- pushes ----------------------------------------------------------------

    async def next_push(self, wait: float = WAIT, kind: str | None = None) -> Push:
        """The next push (of type ``kind`` if given; others are dropped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            push = await asyncio.wait_for(self.pushes.get(), max(0.0, deadline - loop.time()))
            if kind is None or push.type == kind:
                return push

    async def next_msg(self, wait: float = WAIT) -> dict[str, Any]:
        return (await self.next_push(wait, "msg")).d

    async def no_push(self, wait: float = 0.2, kind: str | None = None) -> None:
        """Assert no push (of ``kind``) arrives within ``wait``."""
        try:
            push = await self.next_push(wait, kind)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected push {push}")

    def drain_pushes(self) -> list[Push]:
        out = []
        while not self.pushes.empty():
            out.append(self.pushes.get_nowait())
        return out

    # -- closing ---------------------------------------------------------------

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def closed(self, wait: float = WAIT) -> int | None:
        """Wait for the server to close the socket; returns the close code."""
        await asyncio.wait_for(asyncio.shield(self._reader), wait)
        await asyncio.wait_for(self.ws.wait_closed(), wait)
        return self.ws.close_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
