"""A reader that stops reading is cut off with 4001; the others keep getting messages."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

from chatd_protocol import Reply
from support import sync_all, token, url
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
        if slow_code is None and "slow" not in app.hub.users:
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
    msgs, _ = await sync_all(back, slow.pos, limit=4)
    cids = [m["cid"] for m in msgs if m["kind"] == "text"]
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
    msgs, _ = await sync_all(bob, pos)  # defaults: the client pages as the server says
    got = [m["cid"] for m in msgs]
    assert got == [f"l{k}" for k in range(300)]


# -- focused tests: the cap holds, the others do not notice, nothing is lost ---------
#
# The stalled member has small kernel buffers at both ends (its own receive buffer,
# and the server's send buffer for its socket, set from the test), so the server's
# outbound buffer starts to fill after a few tens of KB instead of after whatever the
# kernel's autotuning absorbs: the cut-off comes at a predictable point.

CAP = 64 * 1024
TEXT = "x" * 4000
FAST_LIMITS: dict[str, Any] = {
    "send_rate": 10_000.0,
    "send_burst": 10_000,
    "request_rate": 10_000.0,
    "request_burst": 10_000,
}


class RecordingTransport:
    """Stands in for one server socket's transport: records the bytes the server
    holds for it (the transport's buffer) after every write."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes = 0
        self.largest_write = 0
        self.peak = 0

    def write(self, data: bytes) -> None:
        self.transport.write(data)
        self.writes += 1
        self.largest_write = max(self.largest_write, len(data))
        self.peak = max(self.peak, self.transport.get_write_buffer_size())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class Circle:
    """alice sends to a circle; ``slow`` is a member that stops reading."""

    def __init__(
        self, app: Any, alice: WsClient, conv: str, slow: WsClient, server_side: Any, members: dict[str, WsClient]
    ) -> None:
        self.app = app
        self.alice = alice
        self.members = members  # others, reading normally
        self.conv = conv
        self.slow = slow
        self.server_side = server_side  # the server's sink of the stalled socket
        self.server_ws = server_side.owner.ws  # its connection (the sink lets go of its session at the end)
        self.recorder = RecordingTransport(server_side.transport)
        server_side.transport = self.recorder

    @property
    def slow_connected(self) -> bool:
        return "slow" in self.app.hub.users

    def send(self, k: int) -> asyncio.Future[Any]:
        return self.alice.start("send", {"conv": self.conv, "cid": f"f{k}", "text": TEXT})

    async def send_until_cut(self, limit: int = 2000) -> int:
        """Send in rounds of 20 until the server gives up on ``slow``; returns how
        many were sent."""
        n = 0
        while self.slow_connected:
            assert n < limit, f"{n} messages ({n * len(TEXT)} bytes) and the stalled socket is still served"
            replies = await asyncio.gather(*(self.send(k) for k in range(n, n + 20)))
            assert all(isinstance(r, Reply) for r in replies), replies
            n += 20
        return n

    def read_again(self) -> None:
        """The stalled client reads again: it gets what the server had queued,
        then the close frame (the server waits 2 s for the close handshake)."""
        if self.slow._reader.done():
            self.slow._reader = asyncio.get_running_loop().create_task(self.slow._read())

    async def resume(self, wait: float = 5) -> int | None:
        """Read again, until the close; returns the close code."""
        self.read_again()
        return await self.slow.closed(wait)

    def slow_texts(self) -> list[dict[str, Any]]:
        return [p.d for p in self.slow.drain_pushes() if p.type == "msg" and p.d["kind"] == "text"]


@contextlib.asynccontextmanager
async def stalled_circle(app: Any, clients: Any, *others: str) -> AsyncIterator[Circle]:
    alice = await clients(app, "alice")
    conv = (await alice.call("circle.create", name="firehose", category="interest"))["conv"]
    members = {}
    for user in others:
        members[user] = await clients(app, user)
        await members[user].call("circle.join", conv=conv)
    slow = await stalled_client(app, "slow")
    try:
        await slow.call("circle.join", conv=conv)
        (server_side,) = app.hub.users["slow"]
        server_side.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        slow._reader.cancel()  # stop reading: frames pile up in the kernel, then in the server
        with contextlib.suppress(asyncio.CancelledError):
            await slow._reader
        slow.drain_pushes()
        yield Circle(app, alice, conv, slow, server_side, members)
    finally:
        slow.ws.transport.abort()
        await slow.close()


def closes(app: Any, code: int) -> float:
    value = app.metrics.registry.get_sample_value("chatd_closes_total", {"code": str(code)})
    return value or 0.0


def connections(app: Any) -> float:
    return app.metrics.registry.get_sample_value("chatd_connections") or 0.0


async def test_stalled_reader_is_closed_4001_and_its_buffer_stays_under_the_cap(make_server: Any, clients: Any) -> None:
    app = await make_server(out_buffer=CAP, **FAST_LIMITS)
    async with stalled_circle(app, clients) as c:
        assert connections(app) == 2
        sent = await c.send_until_cut()
        writes, peak, largest = c.recorder.writes, c.recorder.peak, c.recorder.largest_write
        # the server stopped writing to it at once: more messages reach nothing
        more = 100
        replies = await asyncio.gather(*(c.send(k) for k in range(sent, sent + more)))
        assert all(isinstance(r, Reply) for r in replies)
        assert c.recorder.writes == writes
        assert closes(app, 4001) == 1
        assert connections(app) == 1
        # What the server held for the socket passed the cap by at most one write,
        # and one write (a corked batch) is itself held under the cap: so under
        # twice the cap plus one frame (docs/design.md). Meanwhile far more than
        # that was pushed to the circle.
        assert CAP < peak <= CAP + largest
        assert largest <= CAP + len(TEXT) + 1024
        assert (sent + more) * len(TEXT) > 4 * peak
        # the client, reading again, finds what was queued before the cut-off,
        # in order and without a gap, then the close frame with 4001
        assert await c.resume() == 4001
        got = c.slow_texts()
        assert 0 < len(got) < sent
        assert [m["cid"] for m in got] == [f"f{k}" for k in range(len(got))]
        assert [m["seq"] for m in got] == list(range(got[0]["seq"], got[0]["seq"] + len(got)))
        # and the server let go of the socket
        await asyncio.wait_for(c.server_ws.wait_closed(), 5)


async def test_other_members_are_not_slowed_by_a_stalled_one(make_server: Any, clients: Any) -> None:
    app = await make_server(out_buffer=4 * CAP, **FAST_LIMITS)
    async with stalled_circle(app, clients, "fast") as c:
        fast = c.members["fast"]
        fast.drain_pushes()
        loop = asyncio.get_running_loop()
        n = 250
        sent_at: dict[str, float] = {}
        got: list[tuple[dict[str, Any], float]] = []

        async def read() -> None:
            while len(got) < n:
                m = await fast.next_msg(5)
                if m["kind"] == "text":
                    got.append((m, loop.time()))

        reader = loop.create_task(read())
        acks = []
        cut_at = None
        for k in range(n):
            sent_at[f"f{k}"] = loop.time()
            acks.append(c.send(k))
            if cut_at is None and not c.slow_connected:
                cut_at = k
                c.read_again()  # within the close handshake's 2 s, whatever the load
            await asyncio.sleep(0.004)
        replies = await asyncio.gather(*acks)
        assert all(isinstance(r, Reply) for r in replies)
        await asyncio.wait_for(reader, 10)

        # the stalled member was cut off during the run, after a stretch in which
        # the server kept writing to its filling buffer (the cap alone holds 65 frames)
        assert cut_at is not None and cut_at >= 4 * CAP // len(TEXT), cut_at
        # what the normal member saw: every message, in seq order, promptly
        assert [m["cid"] for m, _ in got] == [f"f{k}" for k in range(n)]
        seqs = [m["seq"] for m, _ in got]
        assert seqs == list(range(seqs[0], seqs[0] + n))
        latency = sorted(t - sent_at[m["cid"]] for m, t in got)
        p99, worst = latency[int(0.99 * n) - 1], latency[-1]
        assert p99 < 0.2, f"p99 {p99 * 1000:.0f} ms"
        assert worst < 1.0, f"max {worst * 1000:.0f} ms"
        assert await c.resume() == 4001


async def test_after_4001_sync_from_the_previous_pos_returns_everything_missed(make_server: Any, clients: Any) -> None:
    app = await make_server(out_buffer=CAP, **FAST_LIMITS)
    async with stalled_circle(app, clients) as c:
        sent = await c.send_until_cut()
        # more while it is away
        replies = await asyncio.gather(*(c.send(k) for k in range(sent, sent + 50)))
        assert all(isinstance(r, Reply) for r in replies)
        total = sent + 50
        assert await c.resume() == 4001
        live = c.slow_texts()
        assert 0 < len(live) < sent

        back = await clients(app, "slow")
        # from the pos of its previous auth: everything since, in order, no gap
        synced: list[dict[str, Any]] = []
        pos, more = c.slow.pos, True
        while more:
            d = await back.call("sync", since=pos, limit=100)
            synced += [m for m in d["messages"] if m["kind"] == "text"]
            assert d["pos"] >= pos
            pos, more = d["pos"], d["more"]
        assert [m["cid"] for m in synced] == [f"f{k}" for k in range(total)]
        seqs = [m["seq"] for m in synced]
        assert seqs == list(range(seqs[0], seqs[0] + total))

        # what it got live is the head of that: the same messages
        def key(m: dict[str, Any]) -> tuple[Any, ...]:
            return (m["conv"], m["seq"], m["pos"], m["cid"], m["text"])

        assert [key(m) for m in synced[: len(live)]] == [key(m) for m in live]
        # from the last message it saw live: exactly the ones it missed
        d = await back.call("sync", since=live[-1]["pos"], limit=1000)
        assert not d["more"]
        assert [m["cid"] for m in d["messages"] if m["kind"] == "text"] == [f"f{k}" for k in range(len(live), total)]
        # and pushes flow again on the new socket
        ack = await c.alice.call("send", conv=c.conv, cid="after", text="back")
        m = await back.next_msg(5)
        assert (m["cid"], m["seq"]) == ("after", ack["seq"])


async def test_a_reader_that_never_resumes_is_disconnected(make_server: Any, clients: Any) -> None:
    app = await make_server(out_buffer=CAP, **FAST_LIMITS)
    async with stalled_circle(app, clients) as c:
        await c.send_until_cut()
        # close_timeout is 2 s: the server should have dropped the socket by then
        await asyncio.wait_for(c.server_ws.wait_closed(), 3.5)
