"""Offline notifications end to end: a real server with a notification hook, its
scheduler driven by the test's clock, real sockets and a real SQLite file."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from notify_hooks import Collect, Flaky
from redisproc import RedisProc
from support import FakeClock, read_db, stop_app

from chatd.app import App
from chatd.config import Config
from chatd.settings import SettingError, resolve, to_config

HOOK = ("notify_hooks:Collect",)


@pytest.fixture(autouse=True)
def _reset_hooks() -> None:
    Collect.got = []
    Flaky.got, Flaky.calls, Flaky.fails = [], 0, 0


async def notified(clock: FakeClock, n: int, hook: type = Collect, within: float = 20.0) -> list[Any]:
    """Run the server's clock until the hook has ``n`` notifications."""

    async def enough() -> bool:
        return len(hook.got) >= n

    await clock.run_until(enough, within=within)
    return list(hook.got)


async def idle(app: App, clock: FakeClock) -> None:
    """Run the server's clock until the worker has planned every committed
    message and every hook has had every notification."""
    worker = app.notify
    assert worker is not None

    async def caught_up() -> bool:
        (last,) = read_db(app.config.db_path, "SELECT COALESCE(MAX(id), 0) FROM notifications")[0]
        return worker.cursor >= app.pipeline.head and all(h.cursors.get("notifications", -1) >= last for h in worker.hooks)

    await clock.run_until(caught_up, within=20)


async def presence_is(app: App, user: str, status: str) -> None:
    async def check() -> bool:
        states = await app.presence.backend.get_many([user], app.clock.wall_ms())
        return states[user][1].status == status

    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{user} never became {status}")


async def circle_with(owner: Any, *users: str, app: App, clients: Any) -> str:
    conv = (await owner.call("circle.create", name="ES8 owners", category="interest"))["conv"]
    for u in users:
        c = await clients(app, u)
        await c.call("circle.join", conv=conv)
        await c.close()
        await presence_is(app, u, "offline")
    return str(conv)


async def test_a_dm_notifies_the_offline_peer_once_then_coalesces(make_server: Any, clients: Any) -> None:
    clock = FakeClock()
    app = await make_server(clock=clock, notify_hooks=HOOK, notify_coalesce_s=60)
    alice = await clients(app, "alice", name="Alice")
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    await alice.call("send", conv=dm, cid="1", text="are you at the NIO House?")
    [note] = await notified(clock, 1)
    assert (note.user, note.conv, note.reason, note.seq, note.count) == ("bob", dm, "message", 1, 1)
    assert (note.sender, note.sender_name, note.preview, note.silent) == ("alice", "Alice", "are you at the NIO House?", False)
    assert note.key == f"{app.pipeline.epoch}:bob:{dm}:1"  # the epoch: keys stay unique past a restore
    # three more inside the interval: nothing now, one notification for the three after it
    for i in (2, 3, 4):
        await alice.call("send", conv=dm, cid=str(i), text=f"msg {i}")
    await idle(app, clock)
    assert len(Collect.got) == 1
    clock.advance(60)
    second = (await notified(clock, 2))[1]
    assert (second.seq, second.count, second.preview, second.reason) == (4, 3, "msg 4", "message")
    # the sender is never notified
    assert {n.user for n in Collect.got} == {"bob"}
    assert read_db(app.config.db_path, "SELECT key, count FROM notifications ORDER BY id") == [
        (f"{app.pipeline.epoch}:bob:{dm}:1", 1), (f"{app.pipeline.epoch}:bob:{dm}:4", 3)
    ]


async def test_an_online_or_reading_recipient_gets_nothing(make_server: Any, clients: Any) -> None:
    clock = FakeClock()
    app = await make_server(clock=clock, notify_hooks=HOOK)
    alice = await clients(app, "alice")
    bob = await clients(app, "bob")
    await presence_is(app, "bob", "online")
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    carol_dm = (await alice.call("dm.open", user="carol"))["conv"]
    await alice.call("send", conv=dm, cid="1", text="bob is here")  # bob online: no notification
    await alice.call("send", conv=carol_dm, cid="c1", text="sentinel")  # carol offline: one
    got = await notified(clock, 1)
    assert [(n.user, n.seq) for n in got] == [("carol", 1)]
    # bob away (app in background, socket still open): still no notification
    await bob.call("presence.set", status="away")
    await alice.call("send", conv=dm, cid="2", text="still here?")
    await alice.call("send", conv=carol_dm, cid="c2", text="sentinel")
    clock.advance(61)  # carol's interval passed: her sentinel goes out at once
    got = await notified(clock, 2)
    assert [(n.user, n.seq) for n in got] == [("carol", 1), ("carol", 2)]
    # bob leaves; a first message notifies, the next is coalesced, then bob reads it
    # on another device before the interval ends: the flush drops it
    await bob.close()
    await presence_is(app, "bob", "offline")
    await alice.call("send", conv=dm, cid="3", text="first")
    got = await notified(clock, 3)
    assert (got[2].user, got[2].seq) == ("bob", 3)
    await alice.call("send", conv=dm, cid="4", text="second")
    await alice.call("send", conv=carol_dm, cid="c3", text="sentinel")  # coalesced for carol
    await idle(app, clock)
    phone = await clients(app, "bob")
    await phone.call("read", conv=dm, seq=4)
    await phone.close()
    await presence_is(app, "bob", "offline")
    clock.advance(61)
    got = await notified(clock, 4)  # carol's coalesced sentinel: bob's read one is dropped
    await idle(app, clock)
    assert [(n.user, n.seq) for n in Collect.got] == [("carol", 1), ("carol", 2), ("bob", 3), ("carol", 3)]


async def test_a_message_pushed_live_is_not_notified_when_the_socket_goes_after(
    make_server: Any, clients: Any
) -> None:
    clock = FakeClock()
    app = await make_server(clock=clock, notify_hooks=HOOK, notify_coalesce_s=0)
    alice = await clients(app, "alice")
    bob = await clients(app, "bob")
    await presence_is(app, "bob", "online")
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    carol_dm = (await alice.call("dm.open", user="carol"))["conv"]
    await alice.call("send", conv=dm, cid="1", text="seen live")
    assert (await bob.next_msg())["text"] == "seen live"
    clock.now += 5  # a few ms later the app goes to the background, before the worker's round
    await bob.close()
    await presence_is(app, "bob", "offline")
    await alice.call("send", conv=carol_dm, cid="c", text="sentinel")
    await notified(clock, 1)
    await idle(app, clock)
    assert [n.user for n in Collect.got] == ["carol"]
    # a message sent after the socket went does notify
    clock.now += 5
    await alice.call("send", conv=dm, cid="2", text="after")
    assert [n.user for n in await notified(clock, 2)] == ["carol", "bob"]


async def test_in_a_circle_only_mentions_notify(make_server: Any, clients: Any) -> None:
    clock = FakeClock()
    app = await make_server(clock=clock, notify_hooks=HOOK, notify_coalesce_s=0)
    alice = await clients(app, "alice")
    conv = await circle_with(alice, "bob", "carol", "dave", app=app, clients=clients)
    await alice.call("send", conv=conv, cid="1", text="hello all")  # no mention: nobody
    await alice.call("send", conv=conv, cid="2", text="@bob look", mentions=["bob", "zed"])
    got = await notified(clock, 1)
    assert [(n.user, n.reason, n.preview) for n in got] == [("bob", "mention", "@bob look")]
    # carol blocks alice: an @all by the owner reaches bob and dave only
    carol = await clients(app, "carol")
    await carol.call("block", user="alice")
    await carol.close()
    await presence_is(app, "carol", "offline")
    await alice.call("send", conv=conv, cid="3", text="meetup Saturday", mention_all=True)
    got = await notified(clock, 3)
    assert sorted((n.user, n.reason) for n in got[1:]) == [("bob", "mention_all"), ("dave", "mention_all")]
    # join and leave messages notify nobody
    await idle(app, clock)
    assert len(Collect.got) == 3


async def test_mutes_and_quiet_hours(make_server: Any, clients: Any) -> None:
    clock = FakeClock()
    app = await make_server(clock=clock, notify_hooks=HOOK, notify_coalesce_s=0)
    alice = await clients(app, "alice")
    bob = await clients(app, "bob")
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    conv = await circle_with(alice, "carol", app=app, clients=clients)
    await bob.call("circle.join", conv=conv)
    hour = 3_600_000
    # bob mutes the DM for an hour; carol mutes everything for an hour
    assert (await bob.call("notify.set", conv=dm, muted_until=clock.now + hour))["conv_muted_until"] == clock.now + hour
    carol = await clients(app, "carol")
    assert (await carol.call("notify.set", muted_until=clock.now + hour))["muted_until"] == clock.now + hour
    # bob's quiet hours cover the clock's local time now (UTC+8)
    local = (clock.now // 60_000 + 480) % 1440
    quiet = {"quiet_from": (local - 10) % 1440, "quiet_to": (local + 10) % 1440, "utc_offset": 480}
    got = await bob.call("notify.set", **quiet)
    assert got == {"muted_until": 0, "quiet": {"from": quiet["quiet_from"], "to": quiet["quiet_to"], "utc_offset": 480}}
    assert (await bob.call("notify.get", conv=dm))["conv_muted_until"] == clock.now + hour
    await bob.close()
    await carol.close()
    await presence_is(app, "bob", "offline")
    await presence_is(app, "carol", "offline")
    await alice.call("send", conv=dm, cid="1", text="muted DM")
    await alice.call("send", conv=conv, cid="2", text="@both", mentions=["bob", "carol"])
    [note] = await notified(clock, 1)
    assert (note.user, note.conv, note.silent) == ("bob", conv, True)  # quiet: silent, not dropped
    # an hour later the mutes are over and so are bob's quiet hours
    clock.advance(3601)
    await alice.call("send", conv=dm, cid="3", text="unmuted")
    await alice.call("send", conv=conv, cid="4", text="@carol", mentions=["carol"])
    got = await notified(clock, 3)
    assert sorted((n.user, n.conv, n.silent) for n in got[1:]) == [("bob", dm, False), ("carol", conv, False)]


async def test_notified_exactly_once_across_a_restart(make_server: Any, clients: Any) -> None:
    clock = FakeClock()
    app = await make_server(clock=clock, notify_hooks=HOOK, notify_coalesce_s=0)
    alice = await clients(app, "alice")
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    for i in range(5):
        await alice.call("send", conv=dm, cid=str(i), text=f"m{i}")
    await notified(clock, 5)
    await alice.close()
    await stop_app(app)
    app2 = await make_server(clock=clock, notify_hooks=HOOK, notify_coalesce_s=0)
    alice = await clients(app2, "alice")
    await alice.call("send", conv=dm, cid="after", text="after restart")
    got = await notified(clock, 6)
    await idle(app2, clock)
    assert [n.seq for n in Collect.got] == [1, 2, 3, 4, 5, 6]
    assert len({n.key for n in got}) == 6


async def test_a_failing_hook_is_retried_and_delivers_once(make_server: Any, clients: Any) -> None:
    Flaky.fails = 3
    clock = FakeClock()
    app = await make_server(clock=clock, notify_hooks=("notify_hooks:Flaky",), notify_coalesce_s=0)
    alice = await clients(app, "alice")
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    await alice.call("send", conv=dm, cid="1", text="one")
    await alice.call("send", conv=dm, cid="2", text="two")
    got = await notified(clock, 2, hook=Flaky)
    assert [n.seq for n in got] == [1, 2] and Flaky.calls == 5
    assert read_db(app.config.db_path, "SELECT count(*) FROM hook_failures") == [(0,)]


async def test_no_hook_no_worker(make_server: Any, clients: Any) -> None:
    app = await make_server()
    assert app.notify is None
    alice = await clients(app, "alice")
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    await alice.call("send", conv=dm, cid="1", text="x")
    assert read_db(app.config.db_path, "SELECT count(*) FROM notifications") == [(0,)]


async def test_notifications_forwarded_to_a_redis_stream(make_server: Any, clients: Any, redis_proc: RedisProc) -> None:
    clock = FakeClock()
    app = await make_server(clock=clock, redis_url=redis_proc.url, notify_stream="chatd:notifications")
    alice = await clients(app, "alice")
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    await alice.call("send", conv=dm, cid="1", text="over the stream")
    r = aioredis.Redis.from_url(redis_proc.url)
    try:
        entries: list[Any] = []

        async def forwarded() -> bool:
            entries[:] = await r.xrange("chatd:notifications")
            return bool(entries)

        await clock.run_until(forwarded, within=20)
        fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
        assert fields["key"] == f"{app.pipeline.epoch}:bob:{dm}:1" and fields["user"] == "bob" and fields["preview"] == "over the stream"
        assert fields["silent"] == "0" and fields["count"] == "1"
    finally:
        await r.aclose()


# -- the ops' input ---------------------------------------------------------------


async def test_notify_ops_refuse_garbage_and_foreign_conversations(make_server: Any, clients: Any) -> None:
    app = await make_server()
    alice = await clients(app, "alice")
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    mallory = await clients(app, "mallory")
    bad: list[dict[str, Any]] = [
        {},  # nothing to set
        {"muted_until": -1},
        {"muted_until": 2**53},
        {"muted_until": "soon"},
        {"muted_until": 1.5},
        {"muted_until": True},
        {"quiet_from": 1440, "quiet_to": 0, "utc_offset": 0},
        {"quiet_from": 0, "quiet_to": 60},  # not all three
        {"quiet_from": 60, "quiet_to": 60, "utc_offset": 0},
        {"quiet_from": 0, "quiet_to": 60, "utc_offset": 841},
        {"quiet_from": 0, "quiet_to": 60, "utc_offset": 0, "quiet_off": True},
        {"quiet_off": "yes"},
        {"conv": dm},  # conv without muted_until
        {"conv": dm, "muted_until": 0, "quiet_off": True},
        {"conv": "x" * 200, "muted_until": 0},
        {"conv": 7, "muted_until": 0},
        {"sound": "off"},
    ]
    for d in bad:
        await alice.fail("notify.set", "bad_request", **d)
    await alice.fail("notify.get", "bad_request", conv=["dm"])
    await alice.fail("notify.get", "bad_request", extra=1)
    # another's DM, existing or not: the same answer; an unknown circle: not_found
    for op, extra in (("notify.get", {}), ("notify.set", {"muted_until": 1})):
        a = await mallory.fail(op, "not_member", conv=dm, **extra)
        b = await mallory.fail(op, "not_member", conv="dm:nobody:zed", **extra)
        assert a.message.replace(dm, "?") == b.message.replace("dm:nobody:zed", "?")
        await mallory.fail(op, "not_found", conv="c:999", **extra)
    # nothing changed for alice, and quiet_off clears quiet hours
    assert await alice.call("notify.get") == {"muted_until": 0}
    await alice.call("notify.set", quiet_from=1320, quiet_to=420, utc_offset=480)
    assert "quiet" in await alice.call("notify.get")
    assert await alice.call("notify.set", quiet_off=True) == {"muted_until": 0}


def test_notify_settings_refuse_garbage(tmp_path: Any) -> None:
    for env in (
        {"CHATD_NOTIFY_COALESCE": "-1"},
        {"CHATD_NOTIFY_COALESCE": "soon"},
        {"CHATD_NOTIFY_COALESCE": "86401"},
        {"CHATD_NOTIFY_STREAM": "s" * 300},
    ):
        with pytest.raises(SettingError, match="notify_"):
            resolve({}, None, env)
    with pytest.raises(SettingError, match="notify_hook"):
        resolve({}, {"notify_hook": [1, 2]}, {})
    with pytest.raises(ValueError, match="--notify-stream needs --redis-url"):
        to_config(resolve({}, None, {"CHATD_NOTIFY_STREAM": "chatd:n"}))
    with pytest.raises(ValueError, match="module:attr"):
        App(Config(db_path=str(tmp_path / "x.db"), notify_hooks=("nocolon",)))
    with pytest.raises(ModuleNotFoundError):
        App(Config(db_path=str(tmp_path / "x.db"), notify_hooks=("no_such_module:hook",)))
    assert to_config(resolve({}, None, {"CHATD_NOTIFY_COALESCE": "0"})).notify_coalesce_s == 0


async def test_two_nodes_one_planner_and_presence_across_them(
    make_server: Any, clients: Any, redis_proc: RedisProc
) -> None:
    clock = FakeClock()
    a = await make_server(clock=clock, redis_url=redis_proc.url, notify_hooks=HOOK, notify_coalesce_s=0)
    b = await make_server(clock=clock, redis_url=redis_proc.url, notify_hooks=HOOK, notify_coalesce_s=0)
    alice = await clients(a, "alice")
    await clients(b, "bob")  # bob's only device is on the other node
    await presence_is(a, "bob", "online")
    bob_dm = (await alice.call("dm.open", user="bob"))["conv"]
    carol_dm = (await alice.call("dm.open", user="carol"))["conv"]
    for i in range(10):
        await alice.call("send", conv=bob_dm, cid=f"b{i}", text="bob is online elsewhere")
        await alice.call("send", conv=carol_dm, cid=f"c{i}", text="carol is offline")
    await notified(clock, 10)
    for app in (a, b):
        if app.scheduler.holds("notify"):
            await idle(app, clock)
    assert sum(app.scheduler.holds("notify") for app in (a, b)) == 1
    assert sorted(n.key for n in Collect.got) == sorted(f"{a.pipeline.epoch}:carol:{carol_dm}:{s}" for s in range(1, 11))
