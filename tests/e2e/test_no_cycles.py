"""A socket that ends leaves no reference cycle behind on the server: its
objects are freed by reference counting at once. chatd defers full collections
(cli.py, ``_tune_gc``), so cyclic garbage of closed sockets piled up until one
ran: RSS grew 24 % an hour in the soak (bench/results/2026-12-02-soak.md).

Every way a socket ends is exercised: a client's close, a dropped TCP
connection, a socket that never authenticated, an auth timeout, a protocol
error (4200), no chatd subprotocol (4203) and a plain HTTP request."""

from __future__ import annotations

import asyncio
import collections
import gc
from collections.abc import Iterator
from typing import Any

import pytest
from support import http_get, token, url
from wsclient import WsClient

from chatd.app import App


@pytest.fixture
def cyclic_garbage() -> Iterator[Any]:
    """``collect()``: the server-side objects that only the cyclic collector
    could free, by type name, since the fixture started."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def collect() -> collections.Counter[str]:
        gc.collect()
        found = collections.Counter(
            f"{type(o).__module__}.{type(o).__qualname__}"
            for o in gc.garbage
            if type(o).__module__.startswith("chatd")
            or type(o).__qualname__ in ("ServerProtocol", "ServerConnection")
        )
        gc.garbage.clear()
        return found

    try:
        collect()
        yield collect
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_a_socket_that_ends_leaves_no_cyclic_garbage(
    make_server: Any, fake_clock: Any, cyclic_garbage: Any
) -> None:
    app: App = await make_server(auth_timeout=10, clock=fake_clock)
    for i in range(6):
        c = await WsClient.connect(url(app), "msgpack" if i % 2 else "json")
        await c.auth(token(f"u{i}"))
        conv = (await c.call("dm.open", user=f"peer{i}"))["conv"]
        await c.call("send", conv=conv, cid="x", text="the new swap station opened")
        await c.call("presence.sub", users=[f"peer{i}"])
        await c.call("typing", conv=conv)
        await c.call("history", conv=conv)
        if i % 2:
            await c.close()
        else:
            c.ws.transport.abort()  # the phone lost its network
            await asyncio.sleep(0.05)
    never = await WsClient.connect(url(app), "msgpack")
    await never.close()
    late = await WsClient.connect(url(app), "msgpack")
    fake_clock.advance(11)
    assert await late.closed() == 4100
    bad = await WsClient.connect(url(app), "msgpack")
    await bad.send_raw(b"\xc1")  # not msgpack
    assert await bad.closed() == 4200
    other = await WsClient.connect(url(app), None, subprotocols=["graphql-ws"])
    assert await other.closed() == 4203
    assert (await http_get(app.port, "/healthz"))[0] == 200
    await asyncio.sleep(0.1)  # every server-side connection_lost has run
    assert not app.hub.users
    assert cyclic_garbage() == {}
