"""Keepalive pings from the shared heartbeat (chatd/edge/heartbeat.py), as a
client on a raw socket sees them, with the server's clock driven by the test:
an idle socket is pinged every interval, one that answers stays, one that does
not is dropped with 1011 an interval after the unanswered ping, and a socket
that talks is not pinged at all. The auth request counts as talk: the first
check after it (at most an interval later) sends no ping, the next one does."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from support import FakeClock, masked, token, ws_upgrade

INTERVAL = 20.0


class Raw:
    """A WebSocket client on a raw socket: it answers nothing by itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(ws_upgrade())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self, within: float = 5.0) -> tuple[int, bytes]:
        """The next frame: (opcode, payload); (-1, b"") at EOF."""
        try:
            b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), within)
        except asyncio.IncompleteReadError:
            return -1, b""
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return b0 & 0x0F, await self.reader.readexactly(n)

    def send(self, opcode: int, payload: bytes) -> None:
        self.writer.write(masked(opcode, payload))

    async def request(self, op: str, d: dict[str, Any], rid: int) -> dict[str, Any]:
        self.send(0x1, orjson.dumps({"id": rid, "op": op, "d": d}))
        while True:
            opcode, payload = await self.frame()
            assert opcode == 0x1, (opcode, payload)
            msg = orjson.loads(payload)
            if msg.get("id") == rid:
                return dict(msg)

    async def quiet(self, seconds: float = 0.3) -> bool:
        """No frame arrives within ``seconds`` (real time)."""
        try:
            got = await self.frame(seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected frame {got}")

    def close(self) -> None:
        self.writer.close()


async def authed(app: Any, user: str) -> Raw:
    raw = await Raw.open(app.port)
    rep = await raw.request("auth", {"token": token(user)}, 1)
    assert "error" not in rep, rep
    return raw


async def step(clock: FakeClock, seconds: float) -> None:
    """Move the server's clock in one-second ticks, letting it run between them."""
    for _ in range(round(seconds)):
        clock.advance(1.0)
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


async def test_an_idle_socket_is_pinged_every_interval_and_stays_while_it_answers(
    make_server: Any, fake_clock: FakeClock
) -> None:
    app = await make_server(clock=fake_clock, ping_interval=INTERVAL)
    raw = await authed(app, "idle")
    try:
        await step(fake_clock, 2 * INTERVAL - 2)
        assert await raw.quiet(), "pinged too early"
        for _ in range(3):
            await step(fake_clock, 3)
            assert await raw.frame() == (0x9, b"")  # a ping
            raw.send(0xA, b"")  # the pong
            await asyncio.sleep(0.05)
            await step(fake_clock, INTERVAL - 3)
            assert await raw.quiet()
        assert await raw.request("ping", {}, 2) != {}  # still open and served
    finally:
        raw.close()


async def test_a_socket_that_does_not_answer_a_ping_is_dropped_with_1011(
    make_server: Any, fake_clock: FakeClock
) -> None:
    app = await make_server(clock=fake_clock, ping_interval=INTERVAL)
    raw = await authed(app, "gone")
    try:
        await step(fake_clock, 2 * INTERVAL + 1)
        assert await raw.frame() == (0x9, b"")
        await step(fake_clock, INTERVAL - 2)
        assert await raw.quiet(), "dropped before its pong was due"
        await step(fake_clock, 3)
        opcode, payload = await raw.frame()
        assert opcode == 0x8, (opcode, payload)  # a close frame
        assert int.from_bytes(payload[:2], "big") == 1011
        assert payload[2:] == b"keepalive ping timeout"
    finally:
        raw.close()


async def test_a_socket_that_talks_is_not_pinged(make_server: Any, fake_clock: FakeClock) -> None:
    app = await make_server(clock=fake_clock, ping_interval=INTERVAL)
    raw = await authed(app, "talker")
    try:
        for i in range(6):  # two minutes of requests every 15 s: never a ping, never dropped
            await step(fake_clock, 15)
            rep = await raw.request("ping", {}, 10 + i)
            assert "error" not in rep, rep
        assert await raw.quiet()
        assert app.server.heartbeat is not None and app.server.heartbeat.checks > 0
    finally:
        raw.close()


async def test_a_socket_that_never_authenticates_is_pinged_too_until_the_auth_timeout(
    make_server: Any, fake_clock: FakeClock
) -> None:
    app = await make_server(clock=fake_clock, ping_interval=2.0, auth_timeout=10.0)
    raw = await Raw.open(app.port)
    try:
        pings, closed = 0, None
        for _ in range(12):  # answer every ping, second by second, until the server closes
            await step(fake_clock, 1)
            while closed is None:
                try:
                    opcode, payload = await raw.frame(0.2)
                except TimeoutError:
                    break
                if opcode == 0x9:
                    pings += 1
                    raw.send(0xA, payload)
                else:
                    closed = (opcode, int.from_bytes(payload[:2], "big"))
            if closed is not None:
                break
        assert pings >= 4  # at 2, 4, 6, 8 s (and 10 s)
        assert closed == (0x8, 4100)  # the auth timeout, not the keepalive
    finally:
        raw.close()


@pytest.mark.parametrize("interval", [None, 0.0])
async def test_no_pings_when_keepalive_is_off(make_server: Any, fake_clock: FakeClock, interval: Any) -> None:
    app = await make_server(clock=fake_clock, ping_interval=interval)
    assert app.server.heartbeat is None
    raw = await authed(app, "nopings")
    try:
        await step(fake_clock, 100)
        assert await raw.quiet()
        assert "error" not in await raw.request("ping", {}, 2)
    finally:
        raw.close()
