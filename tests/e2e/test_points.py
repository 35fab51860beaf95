"""Points as users see them: awards pushed after interactions, caps, tips, red
packets, hooks that fail or hang; against a real server and SQLite file."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from points_hooks import Flaky, Hang, HangOnce
from redisproc import RedisProc
from support import FakeClock, circle, eventually, http_get, read_db
from wsclient import WsClient

from chatd.app import App
from chatd.points import Award

RULES_CAP2 = """
[rules.checkin]
on = "message.sent"
first_of_day = true
currency = "points"
amount = 5

[rules.post]
on = "message.sent"
currency = "cv"
amount = 1
daily_cap = 2
"""


async def points_push(c: WsClient, wait: float = 5.0) -> dict[str, Any]:
    return (await c.next_push(wait, "points")).d


async def entries_until(c: WsClient, n: int, wait: float = 5.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        out += (await points_push(c, wait))["entries"]
    return out


async def grant(app: App, user: str, amount: int) -> None:
    """Fund a user through the ledger's award path (what a hook's award does)."""
    award = Award(user, "points", amount, "grant", f"grant:{user}:{amount}")
    await app.pipeline.write(app.store.ledger.apply_awards([award], ts=1))


def balances(db: Any) -> dict[tuple[str, str], int]:
    return {(u, c): a for u, c, a in read_db(db, "SELECT user, currency, amount FROM balances")}


async def test_awards_land_as_pushes_with_daily_caps_recorded(make_server: Any, clients: Any, tmp_path: Any) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES_CAP2)
    app = await make_server(points=True, points_rules=str(rules))
    alice = await clients(app, "alice")
    conv = (await alice.call("circle.create", name="x", category="city"))["conv"]
    for i in range(3):
        await alice.call("send", conv=conv, cid=f"m{i}", text=f"hello {i}")
    got = await entries_until(alice, 3)  # checkin once, post x2; the third post is capped
    assert sorted((e["rule"], e["amount"]) for e in got) == [("checkin", 5), ("post", 1), ("post", 1)]
    # the capped award changes nothing, so it is not pushed: it is in the ledger with a note
    for _ in range(100):
        entries = (await alice.call("points.ledger", limit=10))["entries"]
        if len(entries) == 4:
            break
        await asyncio.sleep(0.05)
    capped = [e for e in entries if e["amount"] == 0]
    assert [(e["rule"], e["note"]) for e in capped] == [("post", "daily cap 2 reached")]
    await alice.no_push(0.3, "points")
    metrics = (await http_get(app.port, "/metrics"))[1]
    assert b"chatd_points_awards_total 3.0" in metrics  # the capped entry moved nothing
    assert b"chatd_points_lag_seconds 0.0" in metrics  # caught up
    assert await alice.call("points.balance") == {"points": 5, "cv": 2}
    ledger = await alice.call("points.ledger", limit=2)
    assert len(ledger["entries"]) == 2 and ledger["next"] is not None
    rest = await alice.call("points.ledger", before=ledger["next"])
    assert len(ledger["entries"]) + len(rest["entries"]) == 4 and rest["next"] is None
    top = await alice.call("points.top")
    assert top["top"] == [{"rank": 1, "user": "alice", "cv": 2}]


async def test_circle_join_awards_points(make_server: Any, clients: Any) -> None:
    app = await make_server(points=True)
    alice, bob = await clients(app, "alice"), await clients(app, "bob")
    await circle(alice, bob, drain=False)
    got = await entries_until(bob, 1)
    assert got[0]["rule"] == "join_circle" and got[0]["amount"] == 2


async def test_tips_move_points_once_and_never_below_zero(make_server: Any, clients: Any) -> None:
    app = await make_server(points=True)
    alice, bob = await clients(app, "alice"), await clients(app, "bob")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    await alice.call("send", conv=conv, cid="a1", text="morning")  # alice: check-in, 5 points
    ack = await bob.call("send", conv=conv, cid="b1", text="nice photo of the ET9")
    await asyncio.sleep(0.5)
    assert (await alice.call("points.balance"))["points"] == 5
    out = await alice.call("tip", conv=conv, seq=ack["seq"], amount=3, tid="t1")
    assert out == {"to": "bob", "amount": 3, "dup": False}
    again = await alice.call("tip", conv=conv, seq=ack["seq"], amount=3, tid="t1")
    assert again["dup"] is True
    assert (await alice.call("points.balance"))["points"] == 2
    assert (await bob.call("points.balance"))["points"] == 5 + 3
    await alice.fail("tip", "insufficient_points", conv=conv, seq=ack["seq"], amount=3, tid="t2")
    await alice.fail("tip", "bad_request", conv=conv, seq=1, amount=1, tid="t3")  # own message
    carol = await clients(app, "carol")
    await carol.fail("tip", "not_member", conv=conv, seq=ack["seq"], amount=1, tid="t4")
    assert (await alice.call("points.balance"))["points"] == 2
    pushes = [p.d for p in bob.drain_pushes() if p.type == "points"]
    assert any(e["rule"] == "tip" and e["amount"] == 3 for p in pushes for e in p["entries"])


async def test_red_packet_many_concurrent_claimers_never_overpay(make_server: Any, clients: Any) -> None:
    app = await make_server(points=True)
    owner = await clients(app, "owner")
    members = [await clients(app, f"m{i}") for i in range(30)]
    conv = await circle(owner, *members, drain=False)
    await owner.call("send", conv=conv, cid="c", text="check in")
    await asyncio.sleep(0.3)
    db = app.config.db_path
    # fund the owner: 1,000 points awarded by the rules' ledger path
    await grant(app, "owner", 1000)
    total_before = sum(a for (u, c), a in balances(db).items() if c == "points")
    rp = await owner.call("redpacket.send", conv=conv, total=100, shares=10, split="random", rid="r1")
    assert (await owner.call("redpacket.send", conv=conv, total=100, shares=10, rid="r1"))["dup"] is True
    claims = await asyncio.gather(*(m.request("redpacket.claim", id=rp["id"]) for m in members))
    won = [c.d["amount"] for c in claims if hasattr(c, "d")]
    refused = [c.code for c in claims if hasattr(c, "code")]
    assert len(won) == 10 and sum(won) == 100 and min(won) >= 1
    assert refused == ["conflict"] * 20
    # one claim per user: asking again returns the same share
    winner = next(m for m, c in zip(members, claims, strict=True) if hasattr(c, "d"))
    again = await winner.call("redpacket.claim", id=rp["id"])
    assert again["dup"] is True
    outsider = await clients(app, "outsider")
    await outsider.fail("redpacket.claim", "not_member", id=rp["id"])
    await outsider.fail("redpacket.claim", "not_found", id="rp:999")
    held = read_db(db, "SELECT COALESCE(SUM(held), 0) FROM red_packets WHERE state = 'open'")[0][0]
    assert sum(a for (u, c), a in balances(db).items() if c == "points") + held == total_before
    await owner.fail("redpacket.send", "insufficient_points", conv=conv, total=10_000, shares=2, rid="r2")
    await owner.fail("redpacket.send", "bad_request", conv=conv, total=3, shares=5, rid="r3")


async def test_unclaimed_red_packet_is_refunded_on_expiry(make_server: Any, clients: Any) -> None:
    clock = FakeClock()
    app = await make_server(points=True, clock=clock, red_packet_ttl_s=60)
    alice, bob = await clients(app, "alice"), await clients(app, "bob")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    await alice.call("send", conv=conv, cid="c", text="hi")  # 5 points

    async def funded() -> bool:  # the award lands once the server's scheduler runs
        return bool((await alice.call("points.balance"))["points"] >= 5)

    await clock.run_until(funded)
    rp = await alice.call("redpacket.send", conv=conv, total=4, shares=2, split="equal", rid="r")
    msg = await bob.next_msg()
    while msg.get("event", {}).get("type") != "redpacket":
        msg = await bob.next_msg()
    assert msg["event"]["id"] == rp["id"] and msg["event"]["shares"] == 2
    assert (await bob.call("redpacket.claim", id=rp["id"]))["amount"] == 2
    assert (await alice.call("points.balance"))["points"] == 1
    clock.advance(61)

    async def refunded() -> bool:
        return bool((await alice.call("points.balance"))["points"] == 3)

    await eventually(refunded, every=0.1, what="no refund")
    assert (await bob.call("redpacket.claim", id=rp["id"]))["dup"] is True  # his share stays his
    refund = read_db(app.config.db_path, "SELECT amount, rule FROM ledger WHERE key = ?", (f"{rp['id']}:refund",))
    assert refund == [(2, "redpacket.refund")]


@pytest.fixture(autouse=True)
def _reset_hooks() -> Any:
    Flaky.fails, Flaky.calls = 0, 0
    Hang.release.clear()
    yield
    Hang.release.set()


async def test_failing_hook_is_retried_and_awards_once(make_server: Any, clients: Any) -> None:
    Flaky.fails = 2
    app = await make_server(points=True, points_hooks=("points_hooks:Flaky",))
    alice = await clients(app, "alice")
    conv = (await alice.call("circle.create", name="x", category="city"))["conv"]
    await alice.call("send", conv=conv, cid="m", text="hi")
    rows = await eventually(
        lambda: read_db(app.config.db_path, "SELECT key, amount FROM ledger WHERE rule = 'flaky'"),
        within=8, every=0.1, what="the flaky hook never succeeded",
    )
    assert Flaky.calls >= 3
    assert rows == [(f"flaky:message.sent:{conv}:2", 1)]


async def test_hanging_hook_does_not_slow_chat(make_server: Any, clients: Any) -> None:
    app = await make_server(
        points=True, points_hooks=("points_hooks:Hang",), hook_timeout_s=0.5, send_rate=1e4, send_burst=10_000
    )
    alice, bob = await clients(app, "alice"), await clients(app, "bob")
    conv = await circle(alice, bob, drain=False)
    await alice.call("send", conv=conv, cid="first", text="x")
    await eventually(lambda: Hang.calls, every=0.05)  # the hook is now stuck in its thread
    lat = []
    for i in range(100):
        t0 = time.perf_counter()
        await alice.call("send", conv=conv, cid=f"m{i}", text="x")
        lat.append(time.perf_counter() - t0)
    lat.sort()
    assert lat[98] < 0.1, f"p99 send latency {lat[98] * 1000:.1f} ms with a hanging hook"
    # the rules hook still awards (the check-in)

    async def checked_in() -> bool:
        return bool((await alice.call("points.balance"))["points"] >= 5)

    await eventually(checked_in, within=10, every=0.1)


async def test_invalid_hook_config_is_refused(make_server: Any, tmp_path: Any) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules.x]\non = "message.sent"\ncurrency = "gold"\namount = 1\n')
    with pytest.raises(ValueError, match="currency"):
        await make_server(points=True, points_rules=str(bad))
    with pytest.raises(ModuleNotFoundError):
        await make_server(points=True, points_hooks=("no_such_module:hook",))


async def test_events_are_forwarded_to_a_redis_stream(make_server: Any, clients: Any, redis_proc: RedisProc) -> None:
    app = await make_server(points=True, redis_url=redis_proc.url, points_stream="chatd:events")
    alice = await clients(app, "alice")
    conv = (await alice.call("circle.create", name="x", category="city"))["conv"]
    await alice.call("send", conv=conv, cid="m", text="hi")
    r = aioredis.Redis.from_url(redis_proc.url)
    try:
        keys: list[str] = []

        async def forwarded() -> bool:
            keys[:] = [f[b"key"].decode() for _, f in await r.xrange("chatd:events")]
            return f"message.sent:{conv}:2" in keys

        await eventually(forwarded, every=0.1, what=lambda: str(keys))
        assert all(k.count(":") >= 2 for k in keys)
    finally:
        await r.aclose()


async def test_red_packet_claims_from_two_nodes_conserve_points(
    make_server: Any, clients: Any, redis_proc: RedisProc
) -> None:
    a: App = await make_server(points=True, redis_url=redis_proc.url)
    b: App = await make_server(points=True, redis_url=redis_proc.url)
    owner = await clients(a, "owner")
    members = [await clients(a if i % 2 else b, f"m{i}") for i in range(40)]
    conv = await circle(owner, *members, drain=False)
    await grant(a, "owner", 500)
    await asyncio.sleep(0.5)
    db = a.config.db_path
    before = sum(x for (u, c), x in balances(db).items() if c == "points")
    packets = [await owner.call("redpacket.send", conv=conv, total=50, shares=7, rid=f"r{i}") for i in range(3)]
    claims = await asyncio.gather(
        *(m.request("redpacket.claim", id=p["id"]) for p in packets for m in members)
    )
    won = [c.d["amount"] for c in claims if hasattr(c, "d")]
    assert len(won) == 21 and sum(won) == 150
    held = read_db(db, "SELECT COALESCE(SUM(held), 0) FROM red_packets WHERE state = 'open'")[0][0]
    assert held == 0
    assert sum(x for (u, c), x in balances(db).items() if c == "points") == before


async def test_a_sync_hook_that_hung_once_gets_a_fresh_thread(make_server: Any, clients: Any) -> None:
    """The hung call times out and is retried on a new thread: awards resume
    instead of every later call timing out behind the stuck one."""
    HangOnce.calls = 0
    HangOnce.stuck.clear()
    try:
        app = await make_server(points=True, points_hooks=("points_hooks:HangOnce",), hook_timeout_s=0.3)
        alice = await clients(app, "alice")
        conv = (await alice.call("circle.create", name="x", category="city"))["conv"]
        await alice.call("send", conv=conv, cid="m1", text="hello")
        got: list[dict[str, Any]] = []
        while not any(e["rule"] == "hang_once" for e in got):
            got += (await points_push(alice, 5.0))["entries"]
        assert HangOnce.calls >= 2
    finally:
        HangOnce.stuck.set()


async def test_a_muted_member_sends_no_tips_or_red_packets(make_server: Any, clients: Any) -> None:
    """Issue 10, defect 5: a muted member could still tip and send red packets."""
    app = await make_server()
    alice, bob = await clients(app, "alice"), await clients(app, "bob")
    conv = await circle(alice, bob)
    await grant(app, "bob", 100)
    seq = (await alice.call("send", conv=conv, cid="t", text="tip me"))["seq"]
    await alice.call("circle.mute", conv=conv, user="bob", seconds=600)
    await bob.fail("tip", "muted", conv=conv, seq=seq, amount=5, tid="t1")
    await bob.fail("redpacket.send", "muted", conv=conv, total=10, shares=2, rid="r1")
    await bob.call("circle.leave", conv=conv)
    await bob.call("circle.join", conv=conv)
    await bob.fail("tip", "muted", conv=conv, seq=seq, amount=5, tid="t2")
    assert (await bob.call("points.balance"))["points"] == 100  # nothing moved
    await alice.call("circle.mute", conv=conv, user="bob", seconds=0)
    assert (await bob.call("tip", conv=conv, seq=seq, amount=5, tid="t3"))["dup"] is False
