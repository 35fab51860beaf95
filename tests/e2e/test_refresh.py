"""auth.refresh (issue 10, item 15): a socket renews its token before expiry and
goes on with the new identity; a refused refresh leaves the old token in force."""

from __future__ import annotations

from typing import Any

from support import FakeClock, token


async def test_a_refreshed_session_outlives_the_first_token(make_server: Any, clients: Any, fake_clock: FakeClock) -> None:
    app = await make_server(clock=fake_clock)
    now = fake_clock.now / 1000
    c = await clients(app, None)
    await c.auth(token("alice", "staff", name="Alice", ttl=60, now=now))
    renewed = await c.call("auth.refresh", token=token("alice", "staff", name="Alice Wang", roles=["fellow"], ttl=600, now=now))
    assert renewed["user"]["name"] == "Alice Wang" and renewed["user"]["roles"] == ["fellow"]
    assert renewed["exp"] == int(now) + 600
    fake_clock.advance(120)  # past the first token's expiry
    assert "server_time" in await c.call("ping")
    conv = (await c.call("dm.open", user="bob"))["conv"]
    await c.call("send", conv=conv, cid="1", text="signed with the new profile")
    (msg,) = [m for m in (await c.call("history", conv=conv))["messages"] if m.get("cid") == "1"]
    assert msg["author"]["name"] == "Alice Wang" and msg["author"]["roles"] == ["fellow"]
    fake_clock.advance(481)
    assert await c.closed() == 4102  # the new token expires in its turn


async def test_a_refused_refresh_keeps_the_old_token(make_server: Any, clients: Any, fake_clock: FakeClock) -> None:
    app = await make_server(clock=fake_clock)
    now = fake_clock.now / 1000
    c = await clients(app, None)
    await c.auth(token("alice", ttl=60, now=now))
    await c.fail("auth.refresh", "forbidden", token=token("mallory", ttl=600, now=now))  # another user's
    await c.fail("auth.refresh", "forbidden", token="not.a.token")
    await c.fail("auth.refresh", "forbidden", token=token("alice", ttl=-5, now=now))  # expired already
    await c.fail("auth.refresh", "forbidden", token=token("alice", ttl=600, now=now, secret="x" * 40))  # forged
    await c.fail("auth.refresh", "bad_request")
    await c.fail("auth.refresh", "bad_request", token=5)
    await c.fail("auth.refresh", "bad_request", token="x" * 9000)
    assert c.user is not None and c.user["id"] == "alice"
    fake_clock.advance(61)
    assert await c.closed() == 4102  # the old expiry still holds
