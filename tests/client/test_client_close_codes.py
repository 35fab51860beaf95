"""Close codes, token refresh and retries, against a scripted fake server.

The real server rarely closes with 4102 mid-session or answers ``unavailable``;
a few lines of websockets play those parts so the client's reactions are tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from chatd_client import AuthError, ChatError, Client, ClientClosed, ConnectionLost
from websockets.asyncio.server import ServerConnection, serve

Script = Callable[["FakeServer", ServerConnection, dict[str, Any]], Any]


class FakeServer:
    """Speaks chatd.v1.json. ``on_request(server, ws, req)`` returns a reply ``d``,
    an ``{"error": ...}`` dict, an int (close with that code) or None (no reply)."""

    def __init__(self, on_request: Script | None = None, after_auth: list[int | None] | None = None) -> None:
        self.on_request = on_request
        self.after_auth = after_auth or []  # close code per connection, None: stay open
        self.tokens: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.synced = asyncio.Event()
        self.port = 0

    async def handler(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        auth = orjson.loads(await ws.recv())
        self.tokens.append(auth["d"]["token"])
        user = {"id": "alice", "name": "Alice", "type": "owner", "badges": [], "roles": []}
        await ws.send(orjson.dumps({"id": auth["id"], "d": {"user": user, "pos": 7, "limits": {}}}).decode())
        if index < len(self.after_auth) and self.after_auth[index] is not None:
            await ws.close(self.after_auth[index], "scripted")
            return
        async for data in ws:
            req = orjson.loads(data)
            self.requests.append(req)
            if req["op"] == "sync":
                self.synced.set()
                result: Any = {"messages": [], "pos": 7, "more": False, "convs": []}
            elif self.on_request is not None:
                result = self.on_request(self, ws, req)
            else:
                result = {"server_time": 1}
            if isinstance(result, int):
                await ws.close(result, "scripted")
                return
            if result is None:
                continue
            if "error" in result:
                await ws.send(orjson.dumps({"id": req["id"], **result}).decode())
            else:
                await ws.send(orjson.dumps({"id": req["id"], "d": result}).decode())

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["op"] == op]


@pytest.fixture
async def fake() -> AsyncIterator[Callable[..., Any]]:
    servers: list[Any] = []

    async def start(**kwargs: Any) -> tuple[FakeServer, str]:
        fs = FakeServer(**kwargs)
        srv = await serve(fs.handler, "127.0.0.1", 0, subprotocols=["chatd.v1.json"])  # type: ignore[list-item]
        servers.append(srv)
        fs.port = next(iter(srv.sockets)).getsockname()[1]
        return fs, f"ws://127.0.0.1:{fs.port}/"

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def client(url: str, token: str | None = "static", **kwargs: Any) -> Client:
    return Client(url, token, encoding="json", backoff_min=0.01, backoff_max=0.05, **kwargs)


async def test_token_expired_mid_session_asks_the_provider(fake: Callable[..., Any]) -> None:
    fs, url = await fake(after_auth=[4102])
    tokens = iter(["t1", "t2"])
    async with client(url, None, token_provider=lambda: next(tokens)) as c:
        assert (await asyncio.wait_for(c.ping(), 5))["server_time"] == 1
    assert fs.tokens == ["t1", "t2"]


async def test_static_token_refused_stops_with_auth_error(fake: Callable[..., Any]) -> None:
    fs, url = await fake(after_auth=[4101])
    c = client(url)
    await c.connect()
    with pytest.raises(AuthError) as err:
        async for _ in c.events():
            pass
    assert err.value.code == 4101
    with pytest.raises(AuthError):
        await c.ping()
    assert fs.connections == 1
    await c.close()


async def test_drain_reconnects_with_the_same_token_and_syncs(fake: Callable[..., Any]) -> None:
    fs, url = await fake(after_auth=[4000, 4001])
    async with client(url) as c:
        assert (await asyncio.wait_for(c.ping(), 5))["server_time"] == 1
        await asyncio.wait_for(fs.synced.wait(), 5)
        # a sync can reach the fake on the second connection just before it closes
        # it: wait for the third authentication too
        for _ in range(500):
            if len(fs.tokens) >= 3:
                break
            await asyncio.sleep(0.01)
    assert fs.tokens == ["static"] * 3
    assert fs.ops("sync")[0]["d"] == {"since": 7, "limit": 500}  # from the first auth's pos


async def test_protocol_violation_close_is_not_retried(fake: Callable[..., Any]) -> None:
    fs, url = await fake(after_auth=[4201])
    c = client(url)
    await c.connect()
    with pytest.raises(ClientClosed) as err:
        await asyncio.wait_for(c.ping(), 5)
    assert err.value.code == 4201
    await asyncio.sleep(0.1)
    assert fs.connections == 1
    await c.close()


async def test_dropped_non_idempotent_request_raises_connection_lost(fake: Callable[..., Any]) -> None:
    def drop_join(fs: FakeServer, ws: ServerConnection, req: dict[str, Any]) -> Any:
        return 4000 if req["op"] == "circle.join" else {"server_time": 1}

    fs, url = await fake(on_request=drop_join)
    async with client(url) as c:
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(c.circle_join("c:1"), 5)
        assert (await asyncio.wait_for(c.ping(), 5))["server_time"] == 1  # reconnected
    assert len(fs.ops("circle.join")) == 1


async def test_send_retries_temporary_errors_and_drops_with_the_same_cid(fake: Callable[..., Any]) -> None:
    answers: list[Any] = [
        {"error": {"code": "unavailable", "message": "store busy", "temporary": True}},
        {"error": {"code": "rate_limited", "message": "slow down", "temporary": True, "retry_after_ms": 30}},
        4000,  # connection drops before the reply
        {"conv": "c:1", "seq": 5, "pos": 9, "ts": 1, "dup": True},
    ]

    def flaky_send(fs: FakeServer, ws: ServerConnection, req: dict[str, Any]) -> Any:
        return answers.pop(0) if req["op"] == "send" else {"server_time": 1}

    fs, url = await fake(on_request=flaky_send)
    async with client(url) as c:
        ack = await asyncio.wait_for(c.send("c:1", "hello"), 5)
    assert ack == {"conv": "c:1", "seq": 5, "pos": 9, "ts": 1, "dup": True}
    sends = fs.ops("send")
    assert len(sends) == 4
    assert len({s["d"]["cid"] for s in sends}) == 1
    assert len({s["id"] for s in sends}) == 4  # fresh request ids, same cid


async def test_permanent_error_is_not_retried(fake: Callable[..., Any]) -> None:
    def refuse(fs: FakeServer, ws: ServerConnection, req: dict[str, Any]) -> Any:
        return {"error": {"code": "muted", "message": "muted until tomorrow", "temporary": False}}

    fs, url = await fake(on_request=refuse)
    async with client(url) as c:
        with pytest.raises(ChatError) as err:
            await asyncio.wait_for(c.send("c:1", "hello"), 5)
    assert (err.value.code, err.value.message, err.value.temporary) == ("muted", "muted until tomorrow", False)
    assert len(fs.ops("send")) == 1
