"""The service desk (issue 11, slice 3): the owner's service requests and their
statuses, response clocks with working hours and escalation, the staff inbox and
its coalesced pushes, episodes closed by staff or idleness, ratings and their
credit. Real server, real SQLite file, real sockets and HTTP; the server's clock
is a FakeClock that the tests move."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import FakeClock, admin_call, read_db

# 2025-11-23 12:13:20 UTC = 20:13 in Shanghai, a Sunday: inside the default working hours
START = 1_763_900_000_000
TEAM = [
    {"user": "eng1", "badges": ["Engineer"]},
    {"user": "sup1", "badges": ["City supervisor", "supervisor"]},
]
BOTS = ["bot.charging"]


async def ok(app: Any, op: str, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = await admin_call(app, op, body)
    assert status == 200, (op, body, reply)
    return dict(reply["ok"])


async def provision(app: Any, owner: str, fellow: str = "fiona", bots: list[str] | None = None) -> str:
    g = await ok(app, "service.provision", {"owner": owner, "fellow": fellow, "staff": TEAM,
                                            "bots": BOTS if bots is None else bots})
    return str(g["conv"])


@pytest.fixture
async def app(make_server: Any, fake_clock: FakeClock) -> Any:
    return await make_server(admin_port=0, clock=fake_clock)


async def people(app: Any, clients: Any, owner: str = "olivia") -> tuple[Any, Any, Any, str]:
    conv = await provision(app, owner)
    o = await clients(app, owner, "owner")
    fellow = await clients(app, "fiona", "staff")
    eng = await clients(app, "eng1", "staff")
    return o, fellow, eng, conv


def row_of(page: dict[str, Any], conv: str) -> dict[str, Any]:
    (row,) = [r for r in page["rows"] if r["conv"] == conv]
    return row


async def test_a_customer_message_starts_the_clock_and_a_staff_reply_stops_it(
    app: Any, clients: Any, fake_clock: FakeClock, db_path: Any
) -> None:
    owner, fellow, eng, conv = await people(app, clients)
    row = row_of(await eng.call("inbox"), conv)
    assert (row["waiting_since"], row["due"], row["state"], row["episode"]) == (None, None, "closed", None)
    sent = await owner.call("send", conv=conv, cid="o1", text="我的车充不进电")
    row = row_of(await eng.call("inbox"), conv)
    assert row["waiting_since"] == sent["ts"] and row["due"] == sent["ts"] + 300_000  # first response: 5 min
    assert (row["state"], row["episode"], row["unread"], row["role"]) == ("bot", 1, 1, "staff")
    assert row["owner"] == {"id": "olivia", "name": "olivia"} and row["last"]["text"] == "我的车充不进电"
    fake_clock.advance(30)
    await owner.call("send", conv=conv, cid="o2", text="还在吗")  # still waiting since the first message
    assert row_of(await eng.call("inbox"), conv)["waiting_since"] == sent["ts"]
    fake_clock.advance(60)
    reply = await eng.call("send", conv=conv, cid="e1", text="您好，我来看看")  # noqa: RUF001
    row = row_of(await eng.call("inbox"), conv)
    assert (row["waiting_since"], row["due"], row["state"], row["unread"]) == (None, None, "human", 0)
    # the reply is on record with how long the customer waited
    assert read_db(db_path, "SELECT user, waited, late, first FROM service_replies WHERE conv = ? AND seq = ?",
                   (conv, reply["seq"])) == [("eng1", 90_000, 0, 1)]
    # the next customer message runs the next-response clock (10 min)
    fake_clock.advance(5)
    again = await owner.call("send", conv=conv, cid="o3", text="谢谢")
    assert row_of(await eng.call("inbox"), conv)["due"] == again["ts"] + 600_000
    await fellow.call("send", conv=conv, cid="f1", text="不客气")
    assert row_of(await fellow.call("inbox"), conv)["role"] == "fellow"


async def test_bot_replies_do_not_stop_the_clock_unless_the_policy_says_so(
    make_server: Any, clients: Any, fake_clock: FakeClock, tmp_path: Any
) -> None:
    app = await make_server(admin_port=0, clock=fake_clock)
    conv = await provision(app, "olivia")
    owner = await clients(app, "olivia", "owner")
    bot = await clients(app, "bot.charging", "bot")
    eng = await clients(app, "eng1", "staff")
    sent = await owner.call("send", conv=conv, cid="o1", text="charging?")
    await bot.call("send", conv=conv, cid="b1", text="Try the other charger")
    row = row_of(await eng.call("inbox"), conv)
    assert row["waiting_since"] == sent["ts"] and row["state"] == "bot"
    await app.stop()

    policy = tmp_path / "policy.toml"
    policy.write_text("[service]\nbot_reply_stops_clock = true\n")
    app2 = await make_server(admin_port=0, clock=fake_clock, service_policy=str(policy))
    owner = await clients(app2, "olivia", "owner")
    bot = await clients(app2, "bot.charging", "bot")
    eng = await clients(app2, "eng1", "staff")
    await bot.call("send", conv=conv, cid="b2", text="Try the other charger")
    row = row_of(await eng.call("inbox"), conv)
    assert row["waiting_since"] is None and row["state"] == "bot"  # answered, by a bot: no human yet


async def test_outside_working_hours_the_off_hours_target_applies(
    make_server: Any, clients: Any, fake_clock: FakeClock, tmp_path: Any
) -> None:
    policy = tmp_path / "policy.toml"
    # working hours that exclude 20:13 local time
    policy.write_text('[service]\nworking_hours = "09:00-18:00"\noff_hours_response_s = 3600\n')
    app = await make_server(admin_port=0, clock=fake_clock, service_policy=str(policy))
    conv = await provision(app, "olivia")
    owner = await clients(app, "olivia", "owner")
    eng = await clients(app, "eng1", "staff")
    sent = await owner.call("send", conv=conv, cid="o1", text="hello")
    assert row_of(await eng.call("inbox"), conv)["due"] == sent["ts"] + 3_600_000
    # a rescue is urgent at any hour
    req = await owner.call("service.request", conv=conv, type="rescue", rid="r1", note="stuck on G15")
    assert req["urgent"] is True
    assert row_of(await eng.call("inbox"), conv)["due"] == req["created_ts"] + 120_000


async def test_the_inbox_is_sorted_by_waiting_time_filtered_and_paged(
    app: Any, clients: Any, fake_clock: FakeClock
) -> None:
    convs = [await provision(app, f"owner{i}", fellow="fiona" if i % 2 == 0 else "felix") for i in range(5)]
    owners = [await clients(app, f"owner{i}", "owner") for i in range(5)]
    eng = await clients(app, "eng1", "staff")
    fiona = await clients(app, "fiona", "staff")
    for i in (3, 1, 4):  # these three write, in this order
        await owners[i].call("send", conv=convs[i], cid="m", text=f"help {i}")
        fake_clock.advance(10)
    page = await eng.call("inbox", filter="waiting")
    assert [r["conv"] for r in page["rows"]] == [convs[3], convs[1], convs[4]] and page["after"] is None
    everything = await eng.call("inbox")
    assert [r["conv"] for r in everything["rows"]][:3] == [convs[3], convs[1], convs[4]]
    assert len(everything["rows"]) == 5  # those not waiting come after
    # paging: two rows at a time, no row twice, none missed
    seen: list[str] = []
    after = None
    while True:
        d: dict[str, Any] = {"limit": 2}
        if after is not None:
            d["after"] = after
        page = await eng.call("inbox", **d)
        seen += [r["conv"] for r in page["rows"]]
        after = page["after"]
        if after is None:
            break
    assert seen == [r["conv"] for r in everything["rows"]]
    # an answer moves the group out of the waiting ones
    await eng.call("send", conv=convs[3], cid="a", text="on it")
    assert [r["conv"] for r in (await eng.call("inbox", filter="waiting"))["rows"]] == [convs[1], convs[4]]
    # mine: the groups where one is the Fellow
    mine = await fiona.call("inbox", filter="mine")
    assert {r["conv"] for r in mine["rows"]} == {convs[0], convs[2], convs[4]}
    assert all(r["role"] == "fellow" for r in mine["rows"])
    # a garbage cursor is a clear refusal
    await eng.fail("inbox", "bad_request", after="not a cursor")


async def test_inbox_pushes_are_coalesced_per_group(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    owner, _, eng, conv = await people(app, clients)
    for i in range(10):
        await owner.call("send", conv=conv, cid=f"m{i}", text=f"message {i}")
    fake_clock.advance(0.5)
    await eng.no_push(0.2, "inbox")  # nothing before the interval (1 s) passes
    fake_clock.advance(0.5)
    push = await eng.next_push(kind="inbox")
    assert push.d["conv"] == conv and push.d["waiting_since"] is not None and push.d["last_seq"] == 11
    await eng.no_push(0.3, "inbox")  # ten messages, one push
    await eng.call("send", conv=conv, cid="e1", text="here")
    fake_clock.advance(1.0)
    push2 = await eng.next_push(kind="inbox")
    assert push2.d["waiting_since"] is None and push2.d["state"] == "human"
    assert push2.d["rev"] > push.d["rev"]  # a client keeps the row with the highest rev
    assert [p for p in owner.drain_pushes() if p.type == "inbox"] == []  # the staff's row, not the owner's


async def test_service_requests_move_through_their_statuses(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    owner, _fellow, eng, conv = await people(app, clients)
    bot = await clients(app, "bot.charging", "bot")
    req = await owner.call("service.request", conv=conv, type="maintenance", rid="r1", note="annual service")
    assert (req["id"], req["status"], req["urgent"], req["dup"], req["episode"]) == (1, "open", False, False, 1)
    event = (await eng.next_msg())["event"]
    assert event == {"type": "request", "id": 1, "request": "maintenance", "status": "open", "urgent": False,
                     "note": "annual service"}
    again = await owner.call("service.request", conv=conv, type="maintenance", rid="r1")
    assert (again["id"], again["dup"], again["seq"]) == (1, True, None)
    row = row_of(await eng.call("inbox"), conv)
    assert row["requests"] == 1 and [r["type"] for r in row["open_requests"]] == ["maintenance"]
    assert row["waiting_since"] == req["created_ts"]  # a request is a customer waiting
    # who may do what
    await eng.fail("service.request", "forbidden", conv=conv, type="charging", rid="x")
    await owner.fail("service.status", "forbidden", conv=conv, id=1, status="accepted")
    await bot.fail("service.status", "forbidden", conv=conv, id=1, status="accepted")
    stranger = await clients(app, "sam", "staff")
    await stranger.fail("service.status", "not_member", conv=conv, id=1, status="accepted")
    await stranger.fail("service.request", "not_member", conv=conv, type="charging", rid="x")
    # the statuses, each change a system message the owner sees
    owner.drain_pushes()
    for status in ("accepted", "in_progress"):
        moved = await eng.call("service.status", conv=conv, id=1, status=status)
        assert moved["status"] == status
        msg = await owner.next_msg()
        assert msg["event"]["status"] == status and msg["author"]["name"] == "eng1"
    same = await eng.call("service.status", conv=conv, id=1, status="in_progress")
    assert same["seq"] is None  # nothing changed
    await eng.fail("service.status", "conflict", conv=conv, id=1, status="accepted")  # no way back
    await eng.fail("service.status", "not_found", conv=conv, id=9, status="accepted")
    # the backend (service dispatch) finishes it over the admin API
    done = await ok(app, "service.status", {"conv": conv, "id": 1, "status": "done"})
    assert (done["status"], done["updated_by"]) == ("done", "crm")
    await eng.fail("service.status", "conflict", conv=conv, id=1, status="cancelled")
    # the owner may cancel their own
    second = await owner.call("service.request", conv=conv, type="test_drive", rid="r2")
    cancelled = await owner.call("service.status", conv=conv, id=second["id"], status="cancelled")
    assert cancelled["status"] == "cancelled"
    listed = await owner.call("service.requests", conv=conv)
    assert [(r["id"], r["status"]) for r in listed["requests"]] == [(1, "done"), (2, "cancelled")]
    assert (await owner.call("service.requests", conv=conv, open=True))["requests"] == []
    assert row_of(await eng.call("inbox"), conv)["requests"] == 0
    await stranger.fail("service.requests", "not_member", conv=conv)
    assert len((await ok(app, "service.requests", {"conv": conv}))["requests"]) == 2


async def test_overdue_alerts_the_fellow_then_escalates_once(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    owner, fellow, eng, conv = await people(app, clients)
    sup = await clients(app, "sup1", "staff")
    sent = await owner.call("send", conv=conv, cid="o1", text="anyone?")
    await fake_clock.run_until(lambda: _has_push(fellow, "service.alert"), step=10, within=10)
    alert = [p for p in fellow.drain_pushes() if p.type == "service.alert"]
    assert [a.d for a in alert] == [{"conv": conv, "level": 1, "reason": "overdue", "waiting_since": sent["ts"],
                                     "due": sent["ts"] + 300_000}]
    assert fake_clock.wall_ms() >= sent["ts"] + 300_000
    assert row_of(await eng.call("inbox"), conv)["overdue"] == 1
    await sup.no_push(0.1, "service.alert")
    await fake_clock.run_until(lambda: _has_push(sup, "service.alert"), step=10, within=10)
    (esc,) = [p.d for p in sup.drain_pushes() if p.type == "service.alert"]
    assert (esc["level"], esc["reason"]) == (2, "escalated") and fake_clock.wall_ms() >= sent["ts"] + 900_000
    fake_clock.advance(600)
    await fellow.no_push(0.3, "service.alert")  # each level once per wait
    assert [p for p in eng.drain_pushes() if p.type == "service.alert"] == []  # not a supervisor
    # an answer clears it; the next wait alerts again
    await eng.call("send", conv=conv, cid="e1", text="sorry!")
    assert row_of(await eng.call("inbox"), conv)["overdue"] == 0
    fellow.drain_pushes()
    again = await owner.call("send", conv=conv, cid="o2", text="and now?")
    await fake_clock.run_until(lambda: _has_push(fellow, "service.alert"), step=10, within=10)
    (alert2,) = [p.d for p in fellow.drain_pushes() if p.type == "service.alert"]
    assert (alert2["level"], alert2["waiting_since"], alert2["due"]) == (1, again["ts"], again["ts"] + 600_000)


async def _has_push(c: Any, kind: str) -> bool:
    return any(p.type == kind for p in list(c.pushes._queue))


async def test_close_then_rate_once_within_the_window_and_credit_sums_to_one(
    app: Any, clients: Any, fake_clock: FakeClock, db_path: Any
) -> None:
    owner, fellow, eng, conv = await people(app, clients)
    await owner.call("send", conv=conv, cid="o1", text="question")
    await owner.fail("service.rate", "conflict", conv=conv, episode=1, stars=5)  # still open
    for i in range(3):
        await eng.call("send", conv=conv, cid=f"e{i}", text=f"answer {i}")
    await fellow.call("send", conv=conv, cid="f1", text="anything else?")
    await owner.fail("service.close", "forbidden", conv=conv)
    owner.drain_pushes()
    closed = await fellow.call("service.close", conv=conv)
    assert closed["episode"] == 1 and closed["rate_until"] == fake_clock.wall_ms() + 7 * 86_400_000
    event = (await owner.next_msg())["event"]
    assert event == {"type": "episode", "episode": 1, "state": "closed", "reason": "closed",
                     "rate_until": closed["rate_until"]}
    assert (await fellow.call("service.close", conv=conv))["episode"] is None  # nothing open: nothing changes
    await eng.fail("service.rate", "forbidden", conv=conv, episode=1, stars=1)
    rated = await owner.call("service.rate", conv=conv, episode=1, stars=5, comment="很好")
    # the Fellow: 0.4 + 0.6 x 1/4; the engineer 0.6 x 3/4
    assert rated["credit"] == {"fiona": 550_000, "eng1": 450_000} and rated["dup"] is False
    assert sum(rated["credit"].values()) == 1_000_000
    again = await owner.call("service.rate", conv=conv, episode=1, stars=5, comment="很好")
    assert again["dup"] is True and again["credit"] == rated["credit"]
    await owner.fail("service.rate", "conflict", conv=conv, episode=1, stars=1)
    await owner.fail("service.rate", "not_found", conv=conv, episode=7, stars=1)
    assert read_db(db_path, "SELECT kind, user FROM events WHERE kind = 'service.rated'") == [
        ("service.rated", "olivia")]
    # a second episode, no staff reply, rated too late
    await owner.call("send", conv=conv, cid="o2", text="one more")
    assert row_of(await eng.call("inbox"), conv)["episode"] == 2
    await eng.call("service.close", conv=conv)
    fake_clock.advance(7 * 86_400 + 1)
    await owner.fail("service.rate", "conflict", conv=conv, episode=2, stars=4)


async def test_an_idle_episode_closes_by_itself(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    owner, _, eng, conv = await people(app, clients)
    await owner.call("send", conv=conv, cid="o1", text="hi")
    await eng.call("send", conv=conv, cid="e1", text="hello")
    owner.drain_pushes()

    async def closed() -> bool:
        return any(p.type == "msg" and p.d.get("event", {}).get("type") == "episode" for p in list(owner.pushes._queue))

    await fake_clock.run_until(closed, step=600, within=10)
    assert fake_clock.wall_ms() >= START + 86_400_000
    row = row_of(await eng.call("inbox"), conv)
    assert (row["state"], row["episode"]) == ("closed", 1)
    # an unanswered customer is never closed for idleness: they stay overdue in the inbox
    waiting = await owner.call("send", conv=conv, cid="o2", text="hello again")
    fake_clock.advance(3 * 86_400)
    await asyncio.sleep(0.3)
    row = row_of(await eng.call("inbox", filter="waiting"), conv)
    assert (row["state"], row["episode"], row["waiting_since"], row["overdue"]) == ("bot", 2, waiting["ts"], 2)


async def test_desk_ops_refuse_other_kinds_and_garbage(app: Any, clients: Any) -> None:
    owner, _, eng, conv = await people(app, clients)
    circle = (await owner.call("circle.create", name="ES8", category="interest"))["conv"]
    await owner.fail("service.request", "not_found", conv=circle, type="charging", rid="x")
    await owner.fail("service.request", "bad_request", conv=conv, type="spaceflight", rid="x")
    await owner.fail("service.request", "bad_request", conv=conv, type="charging", rid="")
    await owner.fail("service.request", "bad_request", conv=conv, type="charging", rid="x", note="n" * 501)
    await owner.fail("service.status", "bad_request", conv=conv, id=1, status="open")
    await owner.fail("service.status", "bad_request", conv=conv, id="1", status="done")
    await owner.fail("service.rate", "bad_request", conv=conv, episode=1, stars=6)
    await owner.fail("service.rate", "bad_request", conv=conv, episode=1, stars=True)
    await owner.fail("inbox", "forbidden")  # staff only
    await eng.fail("inbox", "bad_request", filter="everything")
    await eng.fail("inbox", "bad_request", limit=1000)
    await eng.fail("service.close", "not_found", conv=circle)
    # the admin API serves the backend's desk ops, and not the owner's
    status, reply = await admin_call(app, "service.request", {"conv": conv, "type": "charging", "rid": "x"})
    assert (status, reply["error"]["code"]) == (404, "unknown_op")
    status, reply = await admin_call(app, "inbox", {})
    assert (status, reply["error"]["code"]) == (404, "unknown_op")
    assert (await ok(app, "service.close", {"conv": conv}))["episode"] is None


# -- who may do what in a service group ---------------------------------------------
# The roles of the issue: the group's owner, another owner, the Fellow, a staff member,
# another group's staff member, a bot of the group, and the backend on the admin API.
# Each cell runs on a group of its own, prepared so that the op could succeed.
# Nobody leaves a service group: circle.leave is for circles (not_found to members).
ROLE_USERS = {"owner": None, "other_owner": "oscar", "fellow": "fiona", "staff": "eng1",
              "other_staff": "eng2", "bot": "bot.charging", "admin": None}
ROLE_TYPES = {"owner": "owner", "other_owner": "owner", "fellow": "staff", "staff": "staff",
              "other_staff": "staff", "bot": "bot"}
UO = "unknown_op"  # the admin API serves a backend's ops only
# fmt: off
SERVICE_MATRIX: dict[str, tuple[str, ...]] = {
    # op (+variant)            owner         other_owner   fellow        staff         other_staff   bot           admin
    "service.request":         ("ok",        "not_member", "forbidden",  "forbidden",  "not_member", "forbidden",  UO),
    "service.status":          ("forbidden", "not_member", "ok",         "ok",         "not_member", "forbidden",  "ok"),
    "service.status+cancel":   ("ok",        "not_member", "ok",         "ok",         "not_member", "forbidden",  "ok"),
    "service.requests":        ("ok",        "not_member", "ok",         "ok",         "not_member", "ok",         "ok"),
    "service.close":           ("forbidden", "not_member", "ok",         "ok",         "not_member", "forbidden",  "ok"),
    "service.rate":            ("ok",        "not_member", "forbidden",  "forbidden",  "not_member", "forbidden",  UO),
    "inbox":                   ("forbidden", "forbidden",  "ok",         "ok",         "ok",         "forbidden",  UO),
    "send":                    ("ok",        "not_member", "ok",         "ok",         "not_member", "ok",         UO),
    "circle.leave":            ("not_found", "not_member", "not_found",  "not_found",  "not_member", "not_found",  UO),
    "service.post":            ("forbidden", "forbidden",  "forbidden",  "forbidden",  "forbidden",  "forbidden",  "ok"),
    "service.claim":           ("forbidden", "forbidden",  "forbidden",  "forbidden",  "forbidden",  "ok",         UO),
    "service.to_human":        ("forbidden", "forbidden",  "forbidden",  "forbidden",  "forbidden",  "ok",         UO),
}
# fmt: on


async def test_every_desk_op_by_every_role_in_a_service_group(app: Any, clients: Any) -> None:
    await ok(app, "service.provision", {"owner": "oscar", "fellow": "felix", "staff": [{"user": "eng2"}]})
    socks: dict[str, Any] = {}
    for role, user in ROLE_USERS.items():
        if user is not None:
            socks[role] = await clients(app, user, ROLE_TYPES[role])
    wrong: list[str] = []
    for n, (cell, outcomes) in enumerate(SERVICE_MATRIX.items()):
        op, _, variant = cell.partition("+")
        for role, want in zip(ROLE_USERS, outcomes, strict=True):
            owner_id = f"own{n}.{role}"
            conv = await provision(app, owner_id)
            owner = await clients(app, owner_id, "owner")
            await owner.call("send", conv=conv, cid="first", text="hello")  # episode 1 opens
            await owner.call("service.request", conv=conv, type="charging", rid="prep")  # request 1
            if op == "service.rate":
                await ok(app, "service.close", {"conv": conv})
            d: dict[str, Any] = {
                "service.request": {"conv": conv, "type": "maintenance", "rid": "cell"},
                "service.status": {"conv": conv, "id": 1, "status": "cancelled" if variant else "accepted"},
                "service.requests": {"conv": conv},
                "service.close": {"conv": conv},
                "service.rate": {"conv": conv, "episode": 1, "stars": 4},
                "inbox": {"limit": 100},
                "send": {"conv": conv, "cid": "cell", "text": "cell"},
                "circle.leave": {"conv": conv},
                "service.post": {"conv": conv, "cid": "cell", "text": "notice"},
                "service.claim": {"conv": conv, "seq": 2},  # the owner's first message
                "service.to_human": {"conv": conv},
            }[op]
            if role == "admin":
                status, reply = await admin_call(app, op, d)
                got = "ok" if status == 200 else reply["error"]["code"]
            else:
                c = owner if role == "owner" else socks[role]
                r = await c.request(op, **d)
                got = "ok" if not hasattr(r, "code") else r.code
                if op == "inbox" and got == "ok":  # a row for each group one answers in, and no other
                    assert (conv in {x["conv"] for x in r.d["rows"]}) == (role != "other_staff"), (role, r.d)
            if got != want:
                wrong.append(f"{cell} by {role}: {got}, the table says {want}")
            await owner.close()
    assert not wrong, "\n".join(wrong)


async def test_two_processes_alert_once(
    redis_proc: Any, make_server: Any, clients: Any, fake_clock: FakeClock
) -> None:
    """Both run the scan job; its lease and the alert level stored with the wait make
    one alert, which reaches the Fellow's sockets on either process."""
    a = await make_server(admin_port=0, clock=fake_clock, redis_url=redis_proc.url)
    b = await make_server(clock=fake_clock, redis_url=redis_proc.url)
    conv = await provision(a, "olivia")
    owner = await clients(b, "olivia", "owner")
    on_a = await clients(a, "fiona", "staff")
    on_b = await clients(b, "fiona", "staff")
    await owner.call("send", conv=conv, cid="o1", text="anyone?")

    async def both() -> bool:
        return await _has_push(on_a, "service.alert") and await _has_push(on_b, "service.alert")

    await fake_clock.run_until(both, step=10, within=15)
    fake_clock.advance(120)  # well before the escalation threshold
    await asyncio.sleep(0.5)
    for c in (on_a, on_b):
        await fake_clock.run_until(lambda c=c: _has_push(c, "inbox"), within=5)  # on either process
        pushes = c.drain_pushes()
        alerts = [p.d for p in pushes if p.type == "service.alert"]
        assert [x["level"] for x in alerts] == [1], alerts
        assert {p.d["overdue"] for p in pushes if p.type == "inbox"} >= {1}
    assert [p for p in owner.drain_pushes() if p.type == "inbox"] == []  # nor across the bus


async def test_three_bots_race_for_a_message_and_one_wins(app: Any, clients: Any) -> None:
    bots = ["bot.charging", "bot.repairs", "bot.policy"]
    conv = await provision(app, "olivia", bots=bots)
    owner = await clients(app, "olivia", "owner")
    socks = [await clients(app, b, "bot") for b in bots]
    for n in range(5):  # each message is raced for, from three sockets at once
        sent = await owner.call("send", conv=conv, cid=f"o{n}", text=f"question {n}")
        replies = await asyncio.gather(*(s.request("service.claim", conv=conv, seq=sent["seq"]) for s in socks))
        won = [i for i, r in enumerate(replies) if not hasattr(r, "code")]
        lost = [r for r in replies if hasattr(r, "code")]
        assert len(won) == 1 and [r.code for r in lost] == ["conflict", "conflict"], replies
        assert all(bots[won[0]] in r.message for r in lost)  # the loser learns who has it
        again = await socks[won[0]].call("service.claim", conv=conv, seq=sent["seq"])
        assert again["dup"] is True  # a retry by the winner
    # only customer messages are claimed
    mine = await socks[0].call("send", conv=conv, cid="b", text="a bot's own words")
    await socks[1].fail("service.claim", "not_found", conv=conv, seq=mine["seq"])
    await socks[1].fail("service.claim", "not_found", conv=conv, seq=1)  # the created event


async def test_bots_stay_quiet_after_a_human_reply_and_after_a_handover(
    app: Any, clients: Any, fake_clock: FakeClock
) -> None:
    owner, fellow, eng, conv = await people(app, clients)
    bot = await clients(app, "bot.charging", "bot")
    first = await owner.call("send", conv=conv, cid="o1", text="my charger is broken")
    await eng.call("send", conv=conv, cid="e1", text="I'm on it")
    second = await owner.call("send", conv=conv, cid="o2", text="thanks, and the app?")
    refusal = await bot.fail("service.claim", "conflict", conv=conv, seq=second["seq"])
    assert "staff member is answering" in refusal.message
    fake_clock.advance(601)  # the quiet time (600 s) has passed since the staff reply
    assert (await bot.call("service.claim", conv=conv, seq=second["seq"]))["dup"] is False
    # the bot hands over: needs a human; the Fellow is alerted, the inbox shows it
    fellow.drain_pushes()
    handed = await bot.call("service.to_human", conv=conv, text="The owner asks about a warranty repair")
    assert handed["fellow"] == "fiona" and handed["seq"] is not None
    event = (await owner.next_msg()).get("event", {})
    while event.get("type") != "handover":
        event = (await owner.next_msg()).get("event", {})
    assert event == {"type": "handover", "fellow": "fiona", "text": "The owner asks about a warranty repair"}
    alert = await fellow.next_push(kind="service.alert")
    assert alert.d["reason"] == "needs_human" and alert.d["conv"] == conv
    rows = (await fellow.call("inbox", filter="needs_human"))["rows"]
    assert [r["conv"] for r in rows] == [conv] and rows[0]["state"] == "needs_human"
    assert (await bot.call("service.to_human", conv=conv))["seq"] is None  # once
    third = await owner.call("send", conv=conv, cid="o3", text="hello?")
    refusal = await bot.fail("service.claim", "conflict", conv=conv, seq=third["seq"])
    assert "handed over" in refusal.message
    await bot.fail("service.claim", "conflict", conv=conv, seq=first["seq"])  # handed over: no claims at all
    # a human answers: the episode is theirs
    await fellow.call("send", conv=conv, cid="f1", text="Fiona here, let me help")
    assert (await fellow.call("inbox", filter="needs_human"))["rows"] == []
    await eng.call("service.close", conv=conv)
    await bot.fail("service.to_human", "conflict", conv=conv)  # nothing open to hand over


async def test_an_urgent_request_keeps_later_waits_urgent_and_a_retried_close_closes_nothing_newer(
    app: Any, clients: Any, fake_clock: FakeClock
) -> None:
    owner, _fellow, eng, conv = await people(app, clients)
    rescue = await owner.call("service.request", conv=conv, type="rescue", rid="r1")
    await eng.call("send", conv=conv, cid="e1", text="help is coming")
    fake_clock.advance(60)
    later = await owner.call("service.request", conv=conv, type="maintenance", rid="r2")
    assert later["urgent"] is False
    row = row_of(await eng.call("inbox"), conv)
    assert row["due"] == later["created_ts"] + 120_000 and row["urgent"] is True  # the rescue is still open
    await eng.call("service.status", conv=conv, id=rescue["id"], status="cancelled")
    closed = await eng.call("service.close", conv=conv, episode=1)
    assert closed["episode"] == 1
    await owner.call("send", conv=conv, cid="o1", text="one more thing")  # episode 2
    retry = await eng.call("service.close", conv=conv, episode=1)  # the first close's reply was lost
    assert retry["episode"] is None and row_of(await eng.call("inbox"), conv)["episode"] == 2
    assert row_of(await eng.call("inbox"), conv)["state"] != "closed"


async def test_an_outsider_cannot_tell_whether_someone_has_a_service_group(app: Any, clients: Any) -> None:
    _, _, _, conv = await people(app, clients)
    stranger = await clients(app, "mallory", "owner")
    staff = await clients(app, "sam", "staff")
    for target in (conv, "s:nobody"):
        for c, op, d in (
            (stranger, "service.request", {"type": "charging", "rid": "x"}),
            (stranger, "service.rate", {"episode": 1, "stars": 1}),
            (stranger, "service.requests", {}),
            (staff, "service.status", {"id": 1, "status": "accepted"}),
            (staff, "service.close", {}),
            (staff, "history", {}),
        ):
            refusal = await c.fail(op, "not_member", conv=target, **d)
            assert refusal.message == f"not a member of {target}", (op, target, refusal.message)
    # a backend may learn it: it made them
    status, reply = await admin_call(app, "service.close", {"conv": "s:nobody"})
    assert (status, reply["error"]["code"]) == (404, "not_found")


async def test_every_reply_notifies_the_offline_owner_and_the_owners_messages_notify_no_staff(
    make_server: Any, clients: Any, fake_clock: FakeClock
) -> None:
    from notify_hooks import Collect

    Collect.got = []
    app = await make_server(admin_port=0, clock=fake_clock, notify_hooks=("notify_hooks:Collect",),
                            notify_coalesce_s=0)
    conv = await provision(app, "olivia")
    owner = await clients(app, "olivia", "owner")
    await owner.call("send", conv=conv, cid="o1", text="my car will not charge")  # staff are all offline
    await owner.close()
    eng = await clients(app, "eng1", "staff")
    bot = await clients(app, "bot.charging", "bot")

    async def offline() -> bool:
        states = await app.presence.backend.get_many(["olivia"], app.clock.wall_ms())
        return bool(states["olivia"][1].status == "offline")

    await fake_clock.run_until(offline, within=10)
    await bot.call("send", conv=conv, cid="b1", text="Try the other charger")
    await eng.call("send", conv=conv, cid="e1", text="I am sending a technician")

    async def two() -> bool:
        return len(Collect.got) >= 2

    await fake_clock.run_until(two, within=20)
    fake_clock.advance(2)
    await asyncio.sleep(0.3)
    got = sorted((n.user, n.reason, n.sender) for n in Collect.got)
    assert got == [("olivia", "message", "bot.charging"), ("olivia", "message", "eng1")]  # nobody else


# -- care campaigns ---------------------------------------------------------------------

GIFT = {"type": "gift", "title": "新年礼包 New Year gift", "body": "Claim 200 points",
        "actions": [{"id": "claim", "label": "Claim"}]}


async def test_a_campaign_reaches_the_matching_groups_once_and_each_owner_claims_once(
    app: Any, clients: Any, fake_clock: FakeClock, db_path: Any
) -> None:
    cities = ["Shanghai", "Shanghai", "Beijing", "Shanghai", "Hefei", "Shanghai", "Shanghai"]
    for i, city in enumerate(cities):
        await ok(app, "service.provision", {"owner": f"o{i}", "fellow": "fiona", "tags": {"city": city, "model": "ES8"}})
    app.campaigns.chunk = 2  # several chunks, as for 100,000 groups
    o0 = await clients(app, "o0", "owner")
    o2 = await clients(app, "o2", "owner")
    made = await ok(app, "service.campaign", {"cid": "cny-2027", "card": GIFT, "tags": {"city": "Shanghai"},
                                              "stock": 3, "points": 200})
    assert (made["targets"], made["posted"], made["done"], made["dup"], made["left"]) == (5, 0, False, False, 3)

    async def done() -> bool:
        return bool((await ok(app, "service.campaign", {"cid": "cny-2027", "card": GIFT}))["done"])

    await fake_clock.run_until(done, within=10)
    again = await ok(app, "service.campaign", {"cid": "cny-2027", "card": GIFT})
    assert (again["dup"], again["posted"], again["targets"]) == (True, 5, 5)
    msg = await o0.next_msg()
    assert msg["event"] == {"type": "card", "card": GIFT, "campaign": made["id"]} and msg["author"]["name"] == "crm"
    await o2.no_push(0.2, "msg")  # Beijing: not targeted
    posts = read_db(db_path, "SELECT conv, COUNT(*) FROM campaign_posts GROUP BY conv ORDER BY conv")
    assert posts == [(f"s:o{i}", 1) for i in (0, 1, 3, 5, 6)]  # each once
    await o2.fail("campaign.claim", "not_found", id=made["id"])
    # five owners race for three gifts: three win, each once, and 3 x 200 points were credited
    owners = [await clients(app, f"o{i}", "owner") for i in (0, 1, 3, 5, 6)]
    replies = await asyncio.gather(*(c.request("campaign.claim", id=made["id"]) for c in owners))
    won = [r for r in replies if not hasattr(r, "code")]
    assert len(won) == 3 and sorted(r.code for r in replies if hasattr(r, "code")) == ["conflict", "conflict"]
    assert sorted(r.d["left"] for r in won) == [0, 1, 2]
    winners = [c for c, r in zip(owners, replies, strict=True) if not hasattr(r, "code")]
    for c in winners:
        assert (await c.call("points.balance"))["points"] == 200
        again_claim = await c.call("campaign.claim", id=made["id"])
        assert again_claim == {"id": made["id"], "points": 200, "left": 0, "dup": True}
    assert read_db(db_path, "SELECT SUM(amount), COUNT(*) FROM ledger WHERE rule = 'campaign.claim'") == [(600, 3)]
    assert read_db(db_path, "SELECT claimed FROM campaigns") == [(3,)]
    staff = await clients(app, "fiona", "staff")
    await staff.fail("campaign.claim", "not_found", id=made["id"])  # staff own no service group


async def test_a_campaign_refuses_garbage_and_users(app: Any, clients: Any) -> None:
    for body in (
        {"cid": "x"},
        {"cid": "x", "card": {"type": "gift"}},
        {"cid": "", "card": GIFT},
        {"cid": "x", "card": GIFT, "stock": 0},
        {"cid": "x", "card": GIFT, "points": -1},
        {"cid": "x", "card": GIFT, "points": 100_001},
        {"cid": "x", "card": GIFT, "tags": {"City": "x"}},
        {"cid": "x", "card": GIFT, "tags": "city"},
        {"cid": "x", "card": GIFT, "stock": "10"},
        {"cid": "x" * 65, "card": GIFT},
    ):
        status, reply = await admin_call(app, "service.campaign", body)
        assert (status, reply["error"]["code"]) == (400, "bad_request"), body
    user = await clients(app, "olivia", "owner")
    await user.fail("service.campaign", "forbidden", cid="x", card=GIFT)
    await user.fail("campaign.claim", "bad_request", id="1")
    await user.fail("campaign.claim", "not_found", id=99)
    empty = await ok(app, "service.campaign", {"cid": "none", "card": GIFT, "tags": {"city": "Atlantis"}})
    assert (empty["targets"], empty["done"]) == (0, True)


async def test_reports_are_exact_reproducible_and_export_as_csv(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    import aiohttp

    from chatd.auth import make_token

    since = fake_clock.wall_ms()
    for owner in ("olivia", "oscar"):
        await provision(app, owner, bots=[])
    olivia = await clients(app, "olivia", "owner")
    oscar = await clients(app, "oscar", "owner")
    fiona = await clients(app, "fiona", "staff")
    eng = await clients(app, "eng1", "staff")
    await olivia.call("send", conv="s:olivia", cid="1", text="question")
    fake_clock.advance(60)
    await eng.call("send", conv="s:olivia", cid="2", text="answer")  # first response after 60 s
    await fiona.call("send", conv="s:olivia", cid="3", text="anything else?")
    await fiona.call("service.close", conv="s:olivia")
    assert (await olivia.call("service.rate", conv="s:olivia", episode=1, stars=5))["credit"] == {
        "fiona": 700_000, "eng1": 300_000}
    await oscar.call("send", conv="s:oscar", cid="1", text="question")
    fake_clock.advance(400)
    await fiona.call("send", conv="s:oscar", cid="2", text="sorry for the wait")  # 400 s: past the 300 s target
    await fiona.call("service.close", conv="s:oscar")
    await oscar.call("service.rate", conv="s:oscar", episode=1, stars=4)
    until = fake_clock.wall_ms() + 1
    report = await ok(app, "service.report", {"from": since, "to": until})
    assert report == await ok(app, "service.report", {"from": since, "to": until})  # from the store, every time
    rows = {r["user"]: r for r in report["rows"]}
    assert set(rows) == {"fiona", "eng1"}
    f, e = rows["fiona"], rows["eng1"]
    assert (f["episodes"], f["ratings"], f["stars_sum"], f["stars_avg"]) == (2, 2, 9, "4.50")
    assert (f["credit_millionths"], f["credit"], e["credit_millionths"], e["credit"]) == (
        1_700_000, "1.700000", 300_000, "0.300000")
    assert (f["replies"], f["responses"], f["first_responses"], f["first_response_p50_ms"], f["breaches"]) == (
        2, 1, 1, 400_000, 1)
    assert (e["episodes"], e["replies"], e["first_response_p50_ms"], e["response_p90_ms"], e["breaches"]) == (
        0, 1, 60_000, 60_000, 0)
    # per group: the same figures by service group
    groups = await ok(app, "service.report", {"from": since, "to": until, "by": "group"})
    g = {r["conv"]: r for r in groups["rows"]}
    assert set(g) == {"s:olivia", "s:oscar"} and groups["by"] == "group"
    assert (g["s:olivia"]["episodes"], g["s:olivia"]["stars_avg"], g["s:olivia"]["credit_millionths"],
            g["s:olivia"]["replies"], g["s:olivia"]["first_response_p50_ms"]) == (1, "5.00", 1_000_000, 2, 60_000)
    assert (g["s:oscar"]["breaches"], g["s:oscar"]["first_response_p90_ms"], g["s:oscar"]["stars_sum"]) == (
        1, 400_000, 4)
    group_csv = (await ok(app, "service.report", {"from": since, "to": until, "by": "group", "format": "csv"}))["csv"]
    assert group_csv.startswith("conv,episodes,") and "\r\ns:olivia,1,1,5,5.00,1000000,1.000000,2,1,1," in group_csv
    assert report["final"] is False  # the episodes' ratings could still come
    # closing on a waiting customer instead of answering is on record, and overdue it is a breach
    await olivia.call("send", conv="s:olivia", cid="4", text="one more question")
    fake_clock.advance(301)
    await eng.call("service.close", conv="s:olivia")
    later = await ok(app, "service.report", {"from": since, "to": fake_clock.wall_ms() + 1})
    e2 = {r["user"]: r for r in later["rows"]}["eng1"]
    assert (e2["closed_waiting"], e2["breaches"], e2["replies"]) == (1, 1, 1)
    fake_clock.advance(7 * 86_400 + 1)
    assert (await ok(app, "service.report", {"from": since, "to": until}))["final"] is True
    # a period before any of it: nothing
    assert (await ok(app, "service.report", {"from": since - 10_000, "to": since}))["rows"] == []
    # CSV, as JSON or as the body itself
    text = (await ok(app, "service.report", {"from": since, "to": until, "format": "csv"}))["csv"]
    lines = text.split("\r\n")
    assert lines[0].startswith("user,episodes,ratings,stars_sum,stars_avg,credit_millionths,credit,")
    assert lines[1].startswith("eng1,0,0,0,,300000,0.300000,1,1,1,60000,60000,60000,60000,0")
    assert lines[2].startswith("fiona,2,2,9,4.50,1700000,1.700000,2,1,1,400000,400000,400000,400000,1")
    token = make_token("crm", "bot", scopes=["admin"], now=fake_clock.wall_ms() / 1000)
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{app.admin_port}/v1/service.report", json={"from": since, "to": until, "format": "csv"},
        headers={"Authorization": f"Bearer {token}", "Accept": "text/csv"},
    ) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert await resp.text() == text
    for body in ({"from": until, "to": since}, {"from": 0, "to": 400 * 86_400_000}, {"from": "0", "to": 1},
                 {"from": 0}, {"from": 0, "to": 1, "format": "xlsx"}, {"from": 0, "to": 1, "by": "city"}):
        status, reply = await admin_call(app, "service.report", body)
        assert (status, reply["error"]["code"]) == (400, "bad_request"), body
    await fiona.fail("service.report", "forbidden", **{"from": since, "to": until})
