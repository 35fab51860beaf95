"""A reader that stops reading is cut off with 4001; the others keep getting messages."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from support import token, url
from wsclient import WsClient


async def stalled_client(app: Any, user: str) -> WsClient:
    """A client whose socket has a tiny receive buffer and that never reads after auth."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", app.port))
    # max_queue=1: the websockets client stops reading the TCP socket as soon as one
    # message waits unread, so the server's outbound buffer is what fills up
    c = await WsClient.connect(url(app), "msgpack", sock=sock, max_queue=1)
    await c.auth(token(user))
    return c


async def test_slow_consumer_closed_4001_others_unaffected(make_server: Any, clients: Any) -> None:
    app = await make_server(out_buffer=256 * 1024, max_text=60_000, send_rate=10_000.0, send_burst=10_000)
    alice = await clients(app, "alice")
    fast = await clients(app, "fast", encoding="json")
    conv = (await alice.call("circle.create", name="firehose", category="interest"))["conv"]
    await fast.call("circle.join", conv=conv)
    slow = await stalled_client(app, "slow")
    await slow.call("circle.join", conv=conv)
    slow._reader.cancel()  # stop reading: frames pile up in the kernel, then in the server
    fast.drain_pushes()
    alice.drain_pushes()

    text = "x" * 50_000
    n = 300  # 15 MB in all: far beyond socket buffers plus out_buffer
    received = 0
    slow_code = None
    started = time.monotonic()
    for i in range(0, n, 20):
        replies = await asyncio.gather(
            *(alice.request("send", conv=conv, cid=f"f{k}", text=text) for k in range(i, i + 20))
        )
        assert all(getattr(r, "d", None) for r in replies), replies
        # the reader keeps up, promptly
        for _ in range(20):
            msg = await fast.next_msg(2)
            assert msg["cid"] == f"f{received}"
            received += 1
        if slow_code is None and "slow" not in app.svc.hub.users:
            # the server gave up on it: reading again, the client finds the frames
            # queued before the cut-off and then the close frame with 4001
            slow._reader = asyncio.get_running_loop().create_task(slow._read())
            slow_code = await slow.closed(5)
    elapsed = time.monotonic() - started
    assert received == n
    assert elapsed < 30
    assert slow_code == 4001
    pushed = [p.d["cid"] for p in slow.drain_pushes() if p.type == "msg" and p.d["kind"] == "text"]
    assert 0 < len(pushed) < n
    assert pushed == [f"f{k}" for k in range(len(pushed))]  # in order, no gap, then cut
    # the user reconnects and catches up with sync from its auth position
    # (small pages: see test_large_sync_reply_is_not_a_slow_consumer)
    back = await clients(app, "slow")
    cids: list[str] = []
    pos = slow.pos
    more = True
    while more:
        d = await back.call("sync", since=pos, limit=4)
        cids += [m["cid"] for m in d["messages"] if m["kind"] == "text"]
        pos, more = d["pos"], d["more"]
    assert cids == [f"f{k}" for k in range(n)]


async def test_large_sync_reply_is_not_a_slow_consumer(make_server: Any, clients: Any) -> None:
    app = await make_server(send_rate=10_000.0, send_burst=10_000)  # default out_buffer, max_text
    alice = await clients(app, "alice")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    bob = await clients(app, "bob")
    pos = bob.pos
    await bob.close()
    replies = await asyncio.gather(
        *(alice.request("send", conv=conv, cid=f"l{k}", text="y" * 4000) for k in range(300))
    )
    assert all(getattr(r, "d", None) for r in replies)
    bob = await clients(app, "bob")
    got: list[str] = []
    more = True
    while more:  # defaults: the client pages as the server says
        d = await bob.call("sync", since=pos)
        got += [m["cid"] for m in d["messages"]]
        pos, more = d["pos"], d["more"]
    assert got == [f"l{k}" for k in range(300)]
