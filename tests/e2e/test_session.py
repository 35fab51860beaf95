"""Session life cycle over a real socket: auth, close codes, limits, health, drain."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from chatd_protocol import ErrorReply, Reply
from support import http_get, read_db, stop_app, token, url
from wsclient import WsClient

from chatd.app import App
from chatd.config import DEV_SECRET


async def test_auth_reply(connect: Any, encoding: str) -> None:
    c = await connect(None, encoding=encoding)
    d = await c.auth(token("alice", "staff", name="Alice", badges=["ES8 founder edition"], roles=["fellow"]))
    assert d["user"] == {
        "id": "alice",
        "name": "Alice",
        "type": "staff",
        "badges": ["ES8 founder edition"],
        "roles": ["fellow"],
    }
    assert d["pos"] == 0
    assert abs(d["server_time"] - time.time() * 1000) < 60_000
    assert d["limits"] == {
        "max_frame": 65536,
        "max_text": 4000,
        "send_rate": 10.0,
        "send_burst": 30,
        "recall_window_s": 120,
    }
    assert "server_time" in await c.call("ping")


async def test_subprotocol_negotiation(server: App) -> None:
    both = await WsClient.connect(url(server), subprotocols=["chatd.v1.json", "chatd.v1.msgpack"])
    assert both.ws.subprotocol == "chatd.v1.msgpack"  # msgpack preferred
    await both.close()
    js = await WsClient.connect(url(server), subprotocols=["other", "chatd.v1.json"])
    assert js.ws.subprotocol == "chatd.v1.json"
    await js.close()


@pytest.mark.parametrize("offered", [[], ["chatd.v2.msgpack"], ["graphql-ws"]])
async def test_no_subprotocol_closes_4203(server: App, offered: list[str]) -> None:
    c = await WsClient.connect(url(server), None, subprotocols=offered)
    assert await c.closed() == 4203


async def test_auth_timeout_4100(make_server: Any, clients: Any, fake_clock: Any) -> None:
    app = await make_server(auth_timeout=10, clock=fake_clock)
    c = await clients(app)
    fake_clock.advance(9.9)  # the server's clock: not yet
    await asyncio.sleep(0.1)
    assert c.ws.close_code is None
    fake_clock.advance(0.2)
    assert await c.closed(3) == 4100


@pytest.mark.parametrize("op", ["ping", "send", "sync", "fly"])
async def test_op_before_auth_4103(connect: Any, op: str, encoding: str) -> None:
    c = await connect(None, encoding=encoding)
    await c.send_frame({"id": 1, "op": op, "d": {}})
    assert await c.closed() == 4103


def forged(**claims: Any) -> str:
    base = {"sub": "alice", "typ": "owner", "exp": int(time.time()) + 60}
    base.update(claims)
    return jwt.encode(base, "an-attacker-secret-long-enough-for-hs256!", algorithm="HS256")


@pytest.mark.parametrize(
    ("tok", "code"),
    [
        (forged(), 4101),
        ("garbage", 4101),
        (jwt.encode({"sub": "alice", "typ": "owner", "exp": 1}, DEV_SECRET, algorithm="HS256"), 4102),
        (jwt.encode({"sub": "alice", "typ": "king", "exp": 2**40}, DEV_SECRET, algorithm="HS256"), 4101),
        (jwt.encode({"sub": "alice", "typ": "owner"}, DEV_SECRET, algorithm="HS256"), 4101),
    ],
    ids=["forged", "garbage", "expired", "unknown-type", "no-exp"],
)
async def test_bad_token_closes(connect: Any, tok: str, code: int, encoding: str) -> None:
    c = await connect(None, encoding=encoding)
    await c.send_frame({"id": 1, "op": "auth", "d": {"token": tok}})
    assert await c.closed() == code


@pytest.mark.parametrize("d", [{}, {"token": 5}, {"token": "x" * 9000}, {"token": "t", "extra": 1}])
async def test_malformed_auth_request_closes_4101(connect: Any, d: dict[str, Any]) -> None:
    c = await connect(None)
    await c.send_frame({"id": 1, "op": "auth", "d": d})
    assert await c.closed() == 4101


async def test_second_auth_is_refused(connect: Any) -> None:
    c = await connect("alice")
    await c.fail("auth", "already_authenticated", token=token("mallory"))
    assert (await c.call("ping"))["server_time"] > 0


async def test_wrong_frame_type_4201(connect: Any) -> None:
    m = await connect("alice", encoding="msgpack")
    await m.send_raw('{"id":1,"op":"ping"}')
    assert await m.closed() == 4201
    j = await connect("bob", encoding="json")
    await j.send_raw(b'{"id":1,"op":"ping"}')
    assert await j.closed() == 4201


async def test_wrong_frame_type_before_auth_4201(connect: Any) -> None:
    m = await connect(None, encoding="msgpack")
    await m.send_raw("hello")
    assert await m.closed() == 4201


@pytest.mark.parametrize("raw", [b"\xc1", b"\x00" * 100, b"\xde\xff\xff"])
async def test_garbage_4200(connect: Any, raw: bytes) -> None:
    c = await connect("alice")
    await c.send_raw(raw)
    assert await c.closed() == 4200


async def test_oversize_frame_1009_nothing_stored(connect: Any, db_path: Path) -> None:
    alice = await connect("alice")
    conv = (await alice.call("circle.create", name="big", category="city"))["conv"]
    await alice.send_frame({"id": 99, "op": "send", "d": {"conv": conv, "cid": "big", "text": "x" * 70_000}})
    assert await alice.closed() == 1009
    # the socket is gone, the server is fine, and nothing was stored
    other = await connect("alice")
    hist = await other.call("history", conv=conv)
    assert [m["kind"] for m in hist["messages"]] == ["system"]
    assert read_db(db_path, "SELECT COUNT(*) FROM messages WHERE cid = 'big'") == [(0,)]


async def test_frame_just_under_the_limit_is_fine(connect: Any) -> None:
    alice = await connect("alice")
    conv = (await alice.call("circle.create", name="big", category="city"))["conv"]
    # valid frame, text over max_text: answered, not closed
    await alice.fail("send", "too_long", conv=conv, cid="t", text="y" * 60_000)
    assert (await alice.call("ping"))["server_time"] > 0


async def test_request_flood_4202(make_server: Any, clients: Any) -> None:
    app = await make_server(request_rate=1.0, request_burst=3, flood_strikes=5)
    c = await clients(app, "alice")  # auth does not count
    futs = [c.start("ping") for _ in range(20)]
    assert await c.closed() == 4202
    done = [f.result() for f in futs if f.done() and not f.exception()]
    codes = [getattr(r, "code", "ok") for r in done]
    assert codes.count("ok") == 3
    limited = [r for r in done if getattr(r, "code", None) == "rate_limited"]
    assert len(limited) == 4  # the 5th refusal in a row closes
    assert all(r.temporary and r.retry_after_ms and r.retry_after_ms > 0 for r in limited)
    for f in futs:
        if f.done():
            f.exception()  # consume


async def test_request_rate_limited_then_recovers(make_server: Any, clients: Any) -> None:
    app = await make_server(request_rate=20.0, request_burst=2, flood_strikes=50)
    c = await clients(app, "alice")
    replies = await asyncio.gather(*(c.request("ping") for _ in range(4)))
    assert [getattr(r, "code", "ok") for r in replies].count("rate_limited") >= 1
    await asyncio.sleep(0.15)
    assert (await c.call("ping"))["server_time"] > 0


async def test_healthz_and_metrics(server: App, connect: Any) -> None:
    status, body = await http_get(server.port, "/healthz")
    assert status == 200 and orjson.loads(body) == {"status": "ok", "store": "ok", "bus": "local", "draining": False}
    c = await connect("alice")
    await c.fail("history", "not_found", conv="c:77")
    conv = (await c.call("dm.open", user="bob"))["conv"]
    await c.call("send", conv=conv, cid="m", text="timed")
    status, body = await http_get(server.port, "/metrics")
    assert status == 200
    text = body.decode()
    assert "chatd_connections 1.0" in text
    assert 'chatd_request_errors_total{code="not_found"} 1.0' in text
    for name in ("chatd_messages", "chatd_store_batch_size", "chatd_closes"):
        assert name in text
    # the process and the build (prometheus_client's collectors), and time per op
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert name in text, name
    assert 'chatd_build_info{python="' in text and 'version="' in text
    assert 'chatd_op_seconds_count{op="send"} 1.0' in text
    assert 'chatd_op_seconds_count{op="history"} 1.0' in text
    assert 'chatd_op_seconds_bucket{le="+Inf",op="dm.open"} 1.0' in text


async def test_healthz_says_the_store_is_failing(server: App, connect: Any) -> None:
    from chatd.store import StoreUnavailable

    c = await connect("alice")
    conv = (await c.call("dm.open", user="bob"))["conv"]
    real = server.store.run_batch

    async def broken(ops: Any) -> Any:
        raise StoreUnavailable("disk I/O error")

    server.store.run_batch = broken  # type: ignore[method-assign]
    await c.fail("send", "unavailable", conv=conv, cid="x", text="lost?")
    status, body = await http_get(server.port, "/healthz")
    assert status == 503 and orjson.loads(body)["store"] == "failing" and orjson.loads(body)["status"] == "not ready"
    server.store.run_batch = real  # type: ignore[method-assign]
    await c.call("send", conv=conv, cid="x", text="stored now")
    assert (await http_get(server.port, "/healthz"))[0] == 200


async def test_graceful_stop_acks_pending_then_4000(make_server: Any, clients: Any, db_path: Path) -> None:
    app = await make_server()
    alice = await clients(app, "alice")
    bob = await clients(app, "bob")
    idle = await clients(app)  # not authenticated yet: closed the same way
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    await alice.call("send", conv=conv, cid="warm", text="warm up")  # conversation state cached
    await bob.next_msg()

    # make the next commit slow, so stop() starts while the write is in the pipeline
    store = app.store
    real = store.run_batch
    entered = asyncio.Event()

    async def slow_batch(ops: Any) -> Any:
        entered.set()
        await asyncio.sleep(0.3)
        return await real(ops)

    store.run_batch = slow_batch  # type: ignore[method-assign]
    pending = alice.start("send", {"conv": conv, "cid": "last", "text": "sent just before stop"})
    await asyncio.wait_for(entered.wait(), 5)
    stopping = asyncio.get_running_loop().create_task(stop_app(app))
    ack = await asyncio.wait_for(pending, 5)
    assert getattr(ack, "d", None) is not None, ack
    assert ack.d["dup"] is False
    assert (await bob.next_msg())["cid"] == "last"  # pushed before the close, too
    assert await alice.closed() == 4000
    assert await bob.closed() == 4000
    assert await idle.closed() == 4000
    await stopping
    # the acknowledged message survives a restart
    app2 = await make_server()
    again = await clients(app2, "bob")
    msgs = (await again.call("history", conv=conv))["messages"]
    assert [m["cid"] for m in msgs] == ["warm", "last"]
    assert msgs[-1]["seq"] == ack.d["seq"]
    assert read_db(db_path, "SELECT COUNT(*) FROM messages WHERE cid = 'last'") == [(1,)]


async def test_draining_server_refuses_new_sockets(make_server: Any, clients: Any) -> None:
    app = await make_server()
    port = app.port
    await stop_app(app)
    with pytest.raises(OSError):
        await WsClient.connect(url(port))


@pytest.mark.parametrize("exp", [10**400, 2**63, 253_402_300_800], ids=["10**400", "2**63", "year 10000"])
async def test_a_signed_token_with_an_absurd_expiry_closes_4101_and_opens_nothing(
    server: App, clients: Any, exp: int
) -> None:
    """Issue 10, defect 2: such a token raised inside auth after the session was
    open: no reply, yet requests were served, with no expiry timer and no presence."""
    c = await clients(server, None)
    bad = jwt.encode({"sub": "mallory", "typ": "owner", "exp": exp}, DEV_SECRET, algorithm="HS256")
    auth, ping = c.start("auth", {"token": bad}), c.start("ping")
    assert await c.closed() == 4101
    for fut in (auth, ping):  # neither answered: the session never opened
        with pytest.raises(ConnectionError):
            await fut
    assert server.metrics.registry.get_sample_value("chatd_connections") == 0
    assert "mallory" not in server.hub.users


async def test_malformed_requests_pipelined_behind_auth_are_answered_after_it(connect: Any) -> None:
    """Issue 10, defect 3: they closed the socket with 4200 and the valid auth was
    never answered. Only a frame that is not a map or has no valid id closes."""
    c = await connect(None, encoding="json")
    futs = []
    for frame in (  # sent in this order, without waiting
        {"id": 1, "op": "auth", "d": {"token": token("alice")}},
        {"id": 2, "op": "ping", "d": []},
        {"id": 3, "op": 5},
        {"id": 4, "op": "ping", "d": {}, "x": 1},
        {"id": 5, "op": "ping", "d": {}},
    ):
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        c.pending[frame["id"]] = fut
        futs.append(fut)
        await c.send_frame(frame)
    auth, *bad, ping = futs
    assert isinstance(await auth, Reply)
    for fut in bad:
        err = await fut
        assert isinstance(err, ErrorReply) and err.code == "bad_request"
    assert isinstance(await ping, Reply)
    assert c.ws.close_code is None


async def test_sends_refused_for_the_send_rate_count_toward_the_flood_close(
    make_server: Any, clients: Any
) -> None:
    """Issue 10, defect 9: the spec says that many refusals in a row close with
    4202; refused sends never did."""
    app = await make_server(send_rate=0.01, send_burst=2, flood_strikes=10, request_rate=1e4, request_burst=10_000)
    c = await clients(app, "alice")
    conv = (await c.call("dm.open", user="bob"))["conv"]
    for i in range(2):
        await c.call("send", conv=conv, cid=f"ok{i}", text="within the burst")
    for i in range(9):  # nine refusals in a row: still open
        err = await c.fail("send", "rate_limited", conv=conv, cid=f"x{i}", text="too fast")
        assert err.retry_after_ms is not None and err.retry_after_ms > 0
    await c.call("ping")  # an answer that is no refusal starts the count again
    for i in range(9):
        await c.fail("send", "rate_limited", conv=conv, cid=f"y{i}", text="too fast")
    assert c.ws.close_code is None
    last = c.start("send", {"conv": conv, "cid": "last", "text": "the tenth in a row"})
    assert await c.closed() == 4202  # the tenth is answered by the close
    with pytest.raises(ConnectionError):
        await last
