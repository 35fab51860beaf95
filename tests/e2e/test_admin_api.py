"""The admin API (issue 11, item 1): a backend's HTTP listener with JSON bodies and
an admin-scope bearer token, running the same ops a socket with the scope runs;
``admin.kick`` and ``admin.revoke`` close a user's sockets with 4104 on every
process. Real server, real SQLite file, real HTTP over loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redisproc import RedisProc
from support import FakeClock, admin_call, token

from chatd.auth import make_token


@pytest.fixture
async def app(make_server: Any, fake_clock: FakeClock) -> Any:
    return await make_server(clock=fake_clock, admin_port=0)


def now_s(clock: FakeClock) -> int:
    return clock.wall_ms() // 1000


async def test_kick_closes_every_socket_of_the_user_with_4104(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    t = token("alice", now=now_s(fake_clock))
    phone = await clients(app, None)
    await phone.auth(t)
    desk = await clients(app, None, encoding="json")
    await desk.auth(t)
    bob = await clients(app, "bob", now=now_s(fake_clock))
    status, body = await admin_call(app, "admin.kick", {"user": "alice"})
    assert (status, body) == (200, {"ok": {"user": "alice"}})
    assert await phone.closed() == 4104 and await desk.closed() == 4104
    assert "server_time" in await bob.call("ping")  # somebody else's socket stays
    fake_clock.advance(0.01)
    again = await clients(app, None)  # a kick revokes nothing: the same token is taken again, after it
    await again.auth(t)


async def test_revoke_refuses_older_tokens_and_closes_their_sockets(
    app: Any, clients: Any, fake_clock: FakeClock
) -> None:
    old = token("alice", now=now_s(fake_clock) - 60)
    c = await clients(app, None)
    await c.auth(old)
    status, body = await admin_call(app, "admin.revoke", {"user": "alice"})
    assert status == 200 and body["ok"] == {"user": "alice", "before": now_s(fake_clock) + 1}
    assert await c.closed() == 4104
    retry = await clients(app, None)
    retry.start("auth", {"token": old})
    assert await retry.closed() == 4104  # the old token is refused at auth
    same_second = await clients(app, None)
    same_second.start("auth", {"token": token("alice", now=now_s(fake_clock))})
    assert await same_second.closed() == 4104  # issued in the second of the revocation: refused too
    fake_clock.advance(1)
    fresh = await clients(app, None)
    await fresh.auth(token("alice", now=now_s(fake_clock)))  # issued at `before`: taken
    await fresh.fail("auth.refresh", "forbidden", token=old)  # nor can a socket refresh to a revoked one


async def test_revocation_only_moves_forward_and_spares_newer_sockets(
    app: Any, clients: Any, fake_clock: FakeClock
) -> None:
    t0 = now_s(fake_clock)
    older = await clients(app, None)
    await older.auth(token("alice", now=t0 - 100))
    newer = await clients(app, None)
    await newer.auth(token("alice", now=t0 - 10))
    status, body = await admin_call(app, "admin.revoke", {"user": "alice", "before": t0 - 50})
    assert (status, body["ok"]["before"]) == (200, t0 - 50)
    assert await older.closed() == 4104
    status, body = await admin_call(app, "admin.revoke", {"user": "alice", "before": t0 - 500})
    assert (status, body["ok"]["before"]) == (200, t0 - 50)  # an earlier time does not undo it
    assert "server_time" in await newer.call("ping")
    status, body = await admin_call(app, "admin.revoke", {"user": "alice", "before": t0 + 3600})
    assert status == 400 and body["error"]["code"] == "bad_request"  # a revocation is not a ban
    assert "server_time" in await newer.call("ping")


async def test_a_token_without_iat_is_revoked_by_any_revocation(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    import jwt

    from chatd.config import DEV_SECRET

    claims = {"sub": "alice", "typ": "owner", "exp": now_s(fake_clock) + 600}
    no_iat = jwt.encode(claims, DEV_SECRET, algorithm="HS256")
    c = await clients(app, None)
    await c.auth(no_iat)
    await admin_call(app, "admin.revoke", {"user": "alice", "before": 1})
    assert await c.closed() == 4104


async def test_an_admin_scope_socket_runs_the_same_ops(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    victim = await clients(app, "alice", now=now_s(fake_clock))
    backend = await clients(app, "crm", "bot", scopes=["admin"], now=now_s(fake_clock))
    assert await backend.call("admin.kick", user="alice") == {"user": "alice"}
    assert await victim.closed() == 4104
    user = await clients(app, "mallory", now=now_s(fake_clock))
    await user.fail("admin.kick", "forbidden", user="bob")
    await user.fail("admin.revoke", "forbidden", user="bob")


async def test_kick_and_revoke_reach_sockets_on_another_process(
    make_server: Any, redis_proc: RedisProc, clients: Any
) -> None:
    a = await make_server(redis_url=redis_proc.url, bus_shards=64, admin_port=0)
    b = await make_server(redis_url=redis_proc.url, bus_shards=64)
    on_b = await clients(b, "alice")
    status, _ = await admin_call(a, "admin.kick", {"user": "alice"})
    assert status == 200 and await on_b.closed() == 4104
    old = make_token("bob", "owner", now=__import__("time").time() - 30)
    bob_b = await clients(b, None)
    await bob_b.auth(old)
    status, _ = await admin_call(a, "admin.revoke", {"user": "bob"})
    assert status == 200 and await bob_b.closed() == 4104
    again = await clients(b, None)
    again.start("auth", {"token": old})
    assert await again.closed() == 4104  # the other process reads the same revocation


async def test_requests_a_kicked_socket_queued_are_not_run(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    backend = await clients(app, "crm", "bot", scopes=["admin"], now=now_s(fake_clock))
    conv = (await backend.call("dm.open", user="bob"))["conv"]
    kick = backend.start("admin.kick", {"user": "crm"})
    sends = [backend.start("send", {"conv": conv, "cid": f"s{i}", "text": "after the kick"}) for i in range(20)]
    assert await backend.closed() == 4104
    await asyncio.gather(kick, *sends, return_exceptions=True)
    fake_clock.advance(1)
    bob = await clients(app, "bob", now=now_s(fake_clock))
    assert [m for m in (await bob.call("history", conv=conv))["messages"] if m["kind"] == "text"] == []


@pytest.mark.parametrize("op", ["admin.kick", "admin.revoke"])
async def test_a_sign_out_during_an_auth_closes_that_socket(
    app: Any, clients: Any, fake_clock: FakeClock, op: str
) -> None:
    """The auth registers the socket for sign-outs, then reads the stored ones: one
    that commits before the read is read, one after it reaches the socket."""
    users = app.server.env.users
    seen = users.seen
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_seen(identity: Any) -> None:
        entered.set()
        await release.wait()
        await seen(identity)

    users.seen = slow_seen
    c = await clients(app, None)
    c.start("auth", {"token": token("alice", now=now_s(fake_clock) - 10)})
    await asyncio.wait_for(entered.wait(), 5)
    assert (await admin_call(app, op, {"user": "alice"}))[0] == 200
    release.set()
    assert await c.closed() == 4104


async def test_a_sign_out_lost_on_the_bus_is_applied_when_the_process_resyncs(
    make_server: Any, redis_proc: RedisProc, clients: Any
) -> None:
    a = await make_server(redis_url=redis_proc.url, bus_shards=64, admin_port=0)
    b = await make_server(redis_url=redis_proc.url, bus_shards=64)
    alice = await clients(b, "alice")
    bob = await clients(b, None)
    await bob.auth(make_token("bob", "owner", now=__import__("time").time() - 30))
    redis_proc.kill()  # the envelopes of both sign-outs are lost
    assert (await admin_call(a, "admin.kick", {"user": "alice"}))[0] == 200
    assert (await admin_call(a, "admin.revoke", {"user": "bob"}))[0] == 200
    await asyncio.get_running_loop().run_in_executor(None, redis_proc.start)
    assert await alice.closed(wait=15) == 4104 and await bob.closed(wait=15) == 4104


# -- garbage, oversize, wrong types, forbidden -------------------------------------


UNAUTHORIZED: list[tuple[str, dict[str, str]]] = [
    ("no header", {}),
    ("basic", {"Authorization": "Basic Y3JtOnB3"}),
    ("empty bearer", {"Authorization": "Bearer "}),
    ("garbage", {"Authorization": "Bearer not.a.token"}),
    ("forged", {"Authorization": "Bearer " + make_token("crm", "bot", scopes=["admin"], secret="x" * 40)}),
    ("huge", {"Authorization": "Bearer " + "x" * 12000}),
    ("two words", {"Authorization": "Bearer a b"}),
    ("not ascii", {"Authorization": "Bearer \u00e9t\u00e9"}),
    ("expired", {"Authorization": "Bearer " + make_token("crm", "bot", scopes=["admin"], ttl=-10, now=1_763_900_000)}),
]


@pytest.mark.parametrize(("what", "headers"), UNAUTHORIZED, ids=[w for w, _ in UNAUTHORIZED])
async def test_a_request_without_a_good_token_is_401(app: Any, what: str, headers: dict[str, str]) -> None:
    status, body = await admin_call(app, "admin.kick", {"user": "alice"}, token_="", headers=headers)
    assert status == 401, what
    assert body["error"]["code"] == "unauthorized" and body["error"]["message"]


async def test_a_header_over_the_parsers_limit_is_400_and_names_no_library(app: Any) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{app.admin_port}/v1/admin.kick"
        async with http.post(url, data=b"{}", headers={"Authorization": "Bearer " + "x" * 20000}) as resp:
            assert resp.status == 400  # the HTTP parser's own answer, before chatd sees the request
        async with http.post(url, data=b"{}") as resp:
            assert resp.status == 401 and "Server" not in resp.headers


async def test_expired_user_and_revoked_tokens_are_refused(app: Any, fake_clock: FakeClock) -> None:
    status, body = await admin_call(app, "admin.kick", {"user": "a"}, token_=make_token(
        "crm", "bot", scopes=["admin"], ttl=-10, now=now_s(fake_clock)))
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, body = await admin_call(app, "admin.kick", {"user": "a"}, token_=token("bob", now=now_s(fake_clock)))
    assert (status, body["error"]["code"]) == (403, "forbidden")  # a user's token: no admin scope
    staff = token("s1", "staff", roles=["fellow"], now=now_s(fake_clock))
    status, body = await admin_call(app, "admin.kick", {"user": "a"}, token_=staff)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await admin_call(app, "admin.revoke", {"user": "a"}, token_=token("bob", now=now_s(fake_clock)))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    ops = make_token("ops", "bot", scopes=["admin"], now=now_s(fake_clock) - 5)
    assert (await admin_call(app, "admin.revoke", {"user": "ops"}, token_=ops))[0] == 200
    status, body = await admin_call(app, "admin.kick", {"user": "a"}, token_=ops)
    assert (status, body["error"]["code"]) == (401, "unauthorized")  # a revoked backend token


BAD_BODIES: list[tuple[str, str, bytes]] = [
    ("not json", "admin.kick", b"{user: alice"),
    ("array", "admin.kick", b'["alice"]'),
    ("string", "admin.kick", b'"alice"'),
    ("number", "admin.kick", b"5"),
    ("null", "admin.kick", b"null"),
    ("missing user", "admin.kick", b"{}"),
    ("empty body", "admin.kick", b""),
    ("user not a string", "admin.kick", b'{"user": 5}'),
    ("bad user id", "admin.kick", b'{"user": "a b/c"}'),
    ("long user id", "admin.kick", b'{"user": "' + b"a" * 65 + b'"}'),
    ("unknown field", "admin.kick", b'{"user": "a", "all": true}'),
    ("before a string", "admin.revoke", b'{"user": "a", "before": "now"}'),
    ("before a float", "admin.revoke", b'{"user": "a", "before": 1.5}'),
    ("before negative", "admin.revoke", b'{"user": "a", "before": -1}'),
    ("before past year 9999", "admin.revoke", b'{"user": "a", "before": 253402300800}'),
    ("before a bool", "admin.revoke", b'{"user": "a", "before": true}'),
    ("huge integer", "admin.revoke", b'{"user": "a", "before": 1' + b"0" * 40 + b"}"),
    ("deep nesting", "admin.kick", b'{"user": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
    ("not utf-8", "admin.kick", b'{"user": "\xff\xfe"}'),
]


@pytest.mark.parametrize(("what", "op", "raw"), BAD_BODIES, ids=[w for w, _, _ in BAD_BODIES])
async def test_a_bad_body_is_400_bad_request(app: Any, what: str, op: str, raw: bytes) -> None:
    status, body = await admin_call(app, op, raw=raw, headers={"Content-Type": "application/json"})
    assert status == 400, (what, body)
    assert body["error"]["code"] == "bad_request" and body["error"]["temporary"] is False


async def test_a_body_that_cannot_be_read_is_400(app: Any) -> None:
    status, body = await admin_call(app, "admin.kick", raw=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert (status, body["error"]["code"]) == (400, "bad_request")


async def test_a_failing_op_is_a_json_500_and_a_store_failure_503(app: Any, monkeypatch: Any) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.ops.handlers["admin.kick"].__self__, "commit", broken)
    status, body = await admin_call(app, "admin.kick", {"user": "a"})
    assert (status, body["error"]) == (500, {"code": "internal", "message": "internal error", "temporary": True})
    from chatd.store import StoreUnavailable

    async def gone(user: str) -> Any:
        raise StoreUnavailable("disk gone")

    monkeypatch.setattr(app.admin.users, "sign_outs", gone)
    status, body = await admin_call(app, "admin.kick", {"user": "a"})
    assert (status, body["error"]["code"], body["error"]["temporary"]) == (503, "unavailable", True)


async def test_an_oversize_body_is_413_and_the_listener_goes_on(make_server: Any) -> None:
    app = await make_server(admin_port=0, admin_max_body=4096)
    status, body = await admin_call(app, "admin.kick", raw=b'{"user": "' + b"a" * 5000 + b'"}')
    assert (status, body["error"]["code"]) == (413, "bad_request")
    assert (await admin_call(app, "admin.kick", {"user": "alice"}))[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("POST", "/v1/send", 404, "unknown_op"),  # a user op: the sockets' only
        ("POST", "/v1/auth", 404, "unknown_op"),
        ("POST", "/v1/admin.nothing", 404, "unknown_op"),
        ("POST", "/", 404, "unknown_op"),
        ("POST", "/v2/admin.kick", 404, "unknown_op"),
        ("GET", "/v1/admin.kick", 400, "bad_request"),
        ("PUT", "/v1/admin.kick", 400, "bad_request"),
        ("DELETE", "/v1/admin.kick", 400, "bad_request"),
    ],
)
async def test_wrong_paths_and_methods_get_json_errors(app: Any, method: str, path: str, status: int, code: str) -> None:
    got, body = await admin_call(app, "", {"user": "alice"}, method=method, path=path)
    assert (got, body["error"]["code"]) == (status, code)


async def test_the_admin_listener_is_off_unless_configured(server: Any) -> None:
    assert server.admin is None and server.admin_port == 0


async def test_the_admin_listener_answers_while_sockets_run(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    cs = [await clients(app, f"u{i}", now=now_s(fake_clock)) for i in range(20)]
    results = await asyncio.gather(*(admin_call(app, "admin.kick", {"user": f"u{i}"}) for i in range(20)))
    assert all(status == 200 for status, _ in results)
    assert [await c.closed() for c in cs] == [4104] * 20
