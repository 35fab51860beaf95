"""Service groups (issue 11, slice 2): one permanent group per owner, provisioned by a
backend through the admin API (idempotent, reconciling), staff and bots added and
removed, the Fellow handed over, notices and cards posted; what owner, staff and
outsiders may do in one. Real server, real SQLite file, real HTTP and sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redisproc import RedisProc
from support import admin_call, read_db

TEAM = [
    {"user": "eng1", "badges": ["Engineer", "Shanghai"]},
    {"user": "tech1", "badges": ["Technician"]},
    {"user": "deliv1"},
]
BOTS = ["bot.charging", "bot.repairs"]


def group(owner: str = "olivia", fellow: str = "fiona", **kw: Any) -> dict[str, Any]:
    return {"owner": owner, "fellow": fellow, "staff": TEAM, "bots": BOTS, "tags": {"city": "Shanghai", "model": "ES8"},
            **kw}


async def ok(app: Any, op: str, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = await admin_call(app, op, body)
    assert status == 200, (op, body, reply)
    return dict(reply["ok"])


async def refused(app: Any, op: str, body: Any, status: int, code: str) -> str:
    got, reply = await admin_call(app, op, body)
    assert (got, reply["error"]["code"]) == (status, code), (op, body, reply)
    return str(reply["error"]["message"])


@pytest.fixture
async def app(make_server: Any) -> Any:
    return await make_server(admin_port=0)


async def test_provision_creates_the_owners_group_and_everyone_online_sees_it(app: Any, clients: Any) -> None:
    owner = await clients(app, "olivia", "owner")
    eng = await clients(app, "eng1", "staff", roles=["engineer"])
    g = await ok(app, "service.provision", group(name="Olivia's ES8"))
    assert g["conv"] == "s:olivia" and g["kind"] == "service" and g["created"] is True
    assert (g["owner"], g["fellow"], g["tags"], g["name"]) == ("olivia", "fiona", {"city": "Shanghai", "model": "ES8"},
                                                                "Olivia's ES8")
    assert g["members"] == 7 and g["last_seq"] == 1 and g["removed"] == []
    roster = {(m["user"], m["role"]) for m in g["added"]}
    assert roster == {("olivia", "owner"), ("fiona", "fellow"), ("eng1", "staff"), ("tech1", "staff"),
                      ("deliv1", "staff"), ("bot.charging", "bot"), ("bot.repairs", "bot")}
    for c in (owner, eng):  # their open sockets follow the new group at once
        msg = await c.next_msg()
        assert msg["conv"] == "s:olivia" and msg["event"]["type"] == "created"
        assert {(m["user"], m["role"]) for m in msg["event"]["members"]} == roster
        assert msg["author"]["name"] == "crm"  # the backend that provisioned it
    (mine,) = [c for c in (await owner.call("convs"))["convs"] if c["conv"] == "s:olivia"]
    assert (mine["role"], mine["unread"], mine["fellow"]) == ("owner", 0, "fiona")
    page = (await owner.call("members", conv="s:olivia"))["members"]
    by_user = {m["user"]: m for m in page}
    assert by_user["eng1"]["badges"] == ["Engineer", "Shanghai"] and by_user["deliv1"]["role"] == "staff"
    assert "badges" not in by_user["olivia"]
    ack = await eng.call("send", conv="s:olivia", cid="e1", text="您好，我是您的工程师")  # noqa: RUF001 (Chinese punctuation)
    assert (await owner.next_msg())["seq"] == ack["seq"] == 2
    # a provisioned member is a known user: a DM may be opened to one who never connected
    assert (await owner.call("dm.open", user="fiona"))["peer"] == "fiona"


async def test_provisioning_again_is_idempotent_and_reconciles(app: Any, clients: Any, db_path: Any) -> None:
    first = await ok(app, "service.provision", group())
    again = await ok(app, "service.provision", group())
    assert again["conv"] == first["conv"] and again["created"] is False
    assert (again["added"], again["removed"], again["seq"], again["last_seq"]) == ([], [], None, 1)
    tech = await clients(app, "tech1", "staff")
    new_team = [{"user": "eng1", "badges": ["Senior engineer"]}, {"user": "eng2"}, {"user": "deliv1"}]
    changed = await ok(app, "service.provision", group(staff=new_team, tags={"city": "Hangzhou"}))
    assert changed["added"] == [{"user": "eng2", "role": "staff"}] and changed["removed"] == ["tech1"]
    assert changed["tags"] == {"city": "Hangzhou"} and changed["members"] == 7 and changed["seq"] == 2
    await tech.fail("send", "not_member", conv="s:olivia", cid="t1", text="still here?")
    rows = read_db(db_path, "SELECT user, badges FROM members WHERE conv = 's:olivia' AND user = 'eng1'")
    assert rows == [("eng1", '["Senior engineer"]')]  # badges follow, with no event
    assert read_db(db_path, "SELECT key, value FROM service_tags WHERE conv = 's:olivia'") == [("city", "Hangzhou")]
    # lists left out leave their members alone: only the bots change here
    only_bots = await ok(app, "service.provision", {"owner": "olivia", "fellow": "fiona", "bots": ["bot.policy"]})
    assert only_bots["removed"] == ["bot.charging", "bot.repairs"] and only_bots["added"] == [
        {"user": "bot.policy", "role": "bot"}]
    history = (await (await clients(app, "olivia")).call("history", conv="s:olivia"))["messages"]
    assert [m["event"]["type"] for m in history] == ["created", "members", "members"]


async def test_only_a_handover_changes_the_fellow(app: Any, clients: Any) -> None:
    await ok(app, "service.provision", group())
    message = await refused(app, "service.provision", group(fellow="felix"), 409, "conflict")
    assert "service.handover" in message
    owner = await clients(app, "olivia")
    felix = await clients(app, "felix", "staff", roles=["fellow"])
    h = await ok(app, "service.handover", {"conv": "s:olivia", "fellow": "felix"})
    assert (h["fellow"], h["previous"], h["members"]) == ("felix", "fiona", 8)
    for c in (owner, felix):
        msg = await c.next_msg()
        assert msg["event"] == {"type": "fellow", "user": "felix", "previous": "fiona"}
    roles = {m["user"]: m["role"] for m in (await owner.call("members", conv="s:olivia"))["members"]}
    assert (roles["felix"], roles["fiona"]) == ("fellow", "staff")  # the previous Fellow stays, as staff
    again = await ok(app, "service.handover", {"conv": "s:olivia", "fellow": "felix"})
    assert again["seq"] is None  # to the same Fellow: nothing happens
    await refused(app, "service.handover", {"conv": "s:olivia", "fellow": "olivia"}, 400, "bad_request")
    await refused(app, "service.members", {"conv": "s:olivia", "remove": ["felix"]}, 403, "forbidden")
    assert (await ok(app, "service.provision", group(fellow="felix")))["created"] is False


async def test_staff_and_bots_are_added_and_removed(app: Any, clients: Any) -> None:
    await ok(app, "service.provision", group())
    owner = await clients(app, "olivia")
    r = await ok(app, "service.members", {"conv": "s:olivia", "add": [{"user": "exec1", "badges": ["VP"]},
                                                                      {"user": "bot.policy", "role": "bot"}],
                                          "remove": ["deliv1"]})
    assert r["added"] == [{"user": "exec1", "role": "staff"}, {"user": "bot.policy", "role": "bot"}]
    assert r["removed"] == ["deliv1"] and r["members"] == 8
    event = (await owner.next_msg())["event"]
    assert event == {"type": "members", "added": r["added"], "removed": ["deliv1"]}
    same = await ok(app, "service.members", {"conv": "s:olivia", "add": [{"user": "exec1"}], "remove": ["deliv1"]})
    assert (same["added"], same["removed"], same["seq"]) == ([], [], None)  # nothing new: no event
    await owner.no_push(0.2, "msg")
    await refused(app, "service.members", {"conv": "s:olivia", "remove": ["olivia"]}, 403, "forbidden")
    await refused(app, "service.members", {"conv": "s:olivia", "add": [{"user": "fiona"}]}, 403, "forbidden")
    await refused(app, "service.members", {"conv": "s:olivia"}, 400, "bad_request")
    await refused(app, "service.members", {"conv": "s:olivia", "add": [{"user": "x"}], "remove": ["x"]}, 400,
                  "bad_request")
    await refused(app, "service.members", {"conv": "s:nobody", "remove": ["x"]}, 404, "not_found")
    circle = await (await clients(app, "carl", "fan")).call("circle.create", name="c", category="city")
    await refused(app, "service.members", {"conv": circle["conv"], "remove": ["carl"]}, 404, "not_found")


async def test_notices_and_cards_are_posted_once(app: Any, clients: Any) -> None:
    await ok(app, "service.provision", group())
    owner = await clients(app, "olivia")
    card = {"type": "service_order", "title": "保养完成 Maintenance done", "body": "Your ES8 is ready.",
            "fields": [{"label": "Order", "value": "SO-2026-1201"}, {"label": "Status", "value": "done"}],
            "actions": [{"id": "pay", "label": "Pay", "url": "https://pay.example/SO-2026-1201"}, {"id": "rate",
                                                                                               "label": "Rate"}]}
    posted = await ok(app, "service.post", {"conv": "s:olivia", "cid": "so-1201", "card": card})
    assert posted["dup"] is False and posted["seq"] == 2
    msg = await owner.next_msg()
    assert msg["kind"] == "system" and msg["event"] == {"type": "card", "card": card} and msg["from"] == "crm"
    again = await ok(app, "service.post", {"conv": "s:olivia", "cid": "so-1201", "card": card})
    assert again == {**posted, "dup": True}
    await owner.no_push(0.2, "msg")
    note = await ok(app, "service.post", {"conv": "s:olivia", "cid": "n1", "text": "Your car was delivered."})
    assert (await owner.next_msg())["event"] == {"type": "notice", "text": "Your car was delivered."}
    assert note["seq"] == 3
    await refused(app, "service.post", {"conv": "s:olivia", "cid": "n2"}, 400, "bad_request")
    await refused(app, "service.post", {"conv": "s:olivia", "cid": "n3", "text": "x", "card": card}, 400,
                  "bad_request")
    await refused(app, "service.post", {"conv": "s:nobody", "cid": "n4", "text": "x"}, 404, "not_found")


async def test_what_members_and_outsiders_may_do_in_a_group(app: Any, clients: Any) -> None:
    await ok(app, "service.provision", group())
    owner = await clients(app, "olivia", "owner")
    fellow = await clients(app, "fiona", "staff", roles=["fellow"])
    bot = await clients(app, "bot.charging", "bot")
    other_owner = await clients(app, "oscar", "owner")
    other_staff = await clients(app, "sam", "staff", roles=["engineer"])
    await ok(app, "service.provision", group(owner="oscar", fellow="sam", staff=[], bots=[]))
    said = await owner.call("send", conv="s:olivia", cid="o1", text="我的车充不上电")
    await bot.call("send", conv="s:olivia", cid="b1", text="Charging help: ...")
    await fellow.call("send", conv="s:olivia", cid="f1", text="@all on it", mention_all=True)
    await owner.fail("send", "forbidden", conv="s:olivia", cid="o2", text="@all", mention_all=True)
    for outsider in (other_owner, other_staff):
        await outsider.fail("send", "not_member", conv="s:olivia", cid="x", text="hi")
        await outsider.fail("history", "not_member", conv="s:olivia")
        await outsider.fail("members", "not_member", conv="s:olivia")
        await outsider.fail("typing", "not_member", conv="s:olivia")
        await outsider.fail("read", "not_member", conv="s:olivia", seq=1)
    await fellow.fail("recall", "forbidden", conv="s:olivia", seq=said["seq"])  # a customer's words stay
    await owner.fail("circle.leave", "not_found", conv="s:olivia")  # nobody leaves a service group
    await owner.call("notify.set", conv="s:olivia", muted_until=4_102_444_800_000)  # the owner may mute it
    assert (await owner.call("recall", conv="s:olivia", seq=said["seq"]))["seq"] > said["seq"]
    for c in (owner, fellow, bot, other_owner, other_staff):
        for op, d in (("service.provision", group(owner="zed")), ("service.members", {"conv": "s:olivia",
                      "remove": ["eng1"]}), ("service.handover", {"conv": "s:olivia", "fellow": "sam"}),
                      ("service.post", {"conv": "s:olivia", "cid": "p", "text": "x"})):
            await c.fail(op, "forbidden", **d)
    eng = await clients(app, "eng1", "staff", roles=["engineer"])
    assert (await eng.call("read", conv="s:olivia", seq=said["seq"]))["read_seq"] == said["seq"]
    receipt = await owner.next_push(kind="read")  # "read by eng1"
    assert (receipt.d["user"], receipt.d["conv"], receipt.d["seq"]) == ("eng1", "s:olivia", said["seq"])


async def test_concurrent_provisions_of_one_owner_make_one_group(app: Any, db_path: Any) -> None:
    results = await asyncio.gather(*(admin_call(app, "service.provision", group()) for _ in range(8)))
    assert all(status == 200 for status, _ in results)
    assert sum(r["ok"]["created"] for _, r in results) == 1
    assert read_db(db_path, "SELECT count(*) FROM messages WHERE conv = 's:olivia'") == [(1,)]
    assert read_db(db_path, "SELECT member_count FROM conversations WHERE id = 's:olivia'") == [(7,)]


async def test_a_group_provisioned_on_one_process_reaches_sockets_on_another(
    make_server: Any, redis_proc: RedisProc, clients: Any
) -> None:
    a = await make_server(redis_url=redis_proc.url, bus_shards=64, admin_port=0)
    b = await make_server(redis_url=redis_proc.url, bus_shards=64)
    owner_b = await clients(b, "olivia", "owner")
    eng_b = await clients(b, "eng1", "staff")
    await ok(a, "service.provision", group())
    assert (await owner_b.next_msg())["event"]["type"] == "created"
    assert (await eng_b.next_msg())["event"]["type"] == "created"
    await ok(a, "service.post", {"conv": "s:olivia", "cid": "c1", "text": "delivered"})
    assert (await owner_b.next_msg())["event"]["text"] == "delivered"
    await ok(a, "service.members", {"conv": "s:olivia", "remove": ["eng1"]})
    await eng_b.fail("send", "not_member", conv="s:olivia", cid="e", text="x")


# -- garbage, oversize, wrong types --------------------------------------------------

CARD = {"type": "delivery", "title": "t"}
BAD: list[tuple[str, str, Any]] = [
    ("provision without owner", "service.provision", {"fellow": "f"}),
    ("provision without fellow", "service.provision", {"owner": "o"}),
    ("owner is fellow", "service.provision", {"owner": "o", "fellow": "o"}),
    ("owner in staff", "service.provision", {"owner": "o", "fellow": "f", "staff": [{"user": "o"}]}),
    ("staff twice", "service.provision", {"owner": "o", "fellow": "f", "staff": [{"user": "s"}, {"user": "s"}]}),
    ("staff also bot", "service.provision", {"owner": "o", "fellow": "f", "staff": [{"user": "s"}], "bots": ["s"]}),
    ("staff not a list", "service.provision", {"owner": "o", "fellow": "f", "staff": "s"}),
    ("staff item not a map", "service.provision", {"owner": "o", "fellow": "f", "staff": ["s"]}),
    ("staff item unknown key", "service.provision", {"owner": "o", "fellow": "f", "staff": [{"user": "s", "x": 1}]}),
    ("staff role bot", "service.provision", {"owner": "o", "fellow": "f", "staff": [{"user": "s", "role": "bot"}]}),
    ("staff role owner", "service.members", {"conv": "s:o", "add": [{"user": "s", "role": "owner"}]}),
    ("too many staff", "service.provision", {"owner": "o", "fellow": "f", "staff": [{"user": f"s{i}"} for i in range(51)]}),
    ("badge too long", "service.provision", {"owner": "o", "fellow": "f", "staff": [{"user": "s", "badges": ["x" * 33]}]}),
    ("too many badges", "service.provision", {"owner": "o", "fellow": "f", "staff": [{"user": "s", "badges": ["b"] * 9}]}),
    ("badge not a string", "service.provision", {"owner": "o", "fellow": "f", "staff": [{"user": "s", "badges": [1]}]}),
    ("bad user id", "service.provision", {"owner": "o o", "fellow": "f"}),
    ("bots not users", "service.provision", {"owner": "o", "fellow": "f", "bots": [5]}),
    ("too many bots", "service.provision", {"owner": "o", "fellow": "f", "bots": [f"b{i}" for i in range(11)]}),
    ("tags not a map", "service.provision", {"owner": "o", "fellow": "f", "tags": ["city"]}),
    ("tag key bad", "service.provision", {"owner": "o", "fellow": "f", "tags": {"City": "x"}}),
    ("tag value empty", "service.provision", {"owner": "o", "fellow": "f", "tags": {"city": ""}}),
    ("tag value number", "service.provision", {"owner": "o", "fellow": "f", "tags": {"city": 5}}),
    ("too many tags", "service.provision", {"owner": "o", "fellow": "f", "tags": {f"t{i}": "v" for i in range(17)}}),
    ("name too long", "service.provision", {"owner": "o", "fellow": "f", "name": "x" * 65}),
    ("unknown field", "service.provision", {"owner": "o", "fellow": "f", "city": "x"}),
    ("members bad conv", "service.members", {"conv": "s o", "remove": ["x"]}),
    ("handover no fellow", "service.handover", {"conv": "s:o"}),
    ("post no cid", "service.post", {"conv": "s:o", "text": "x"}),
    ("post text too long", "service.post", {"conv": "s:o", "cid": "c", "text": "x" * 4001}),
    ("post empty text", "service.post", {"conv": "s:o", "cid": "c", "text": ""}),
    ("card not a map", "service.post", {"conv": "s:o", "cid": "c", "card": "hi"}),
    ("card no title", "service.post", {"conv": "s:o", "cid": "c", "card": {"type": "delivery"}}),
    ("card bad type", "service.post", {"conv": "s:o", "cid": "c", "card": {**CARD, "type": "Delivery!"}}),
    ("card unknown key", "service.post", {"conv": "s:o", "cid": "c", "card": {**CARD, "html": "<b>"}}),
    ("card title too long", "service.post", {"conv": "s:o", "cid": "c", "card": {**CARD, "title": "x" * 121}}),
    ("card too many fields", "service.post", {"conv": "s:o", "cid": "c", "card": {**CARD, "fields": [
        {"label": "l", "value": "v"}] * 21}}),
    ("card field no value", "service.post", {"conv": "s:o", "cid": "c", "card": {**CARD, "fields": [{"label": "l"}]}}),
    ("card action bad url", "service.post", {"conv": "s:o", "cid": "c", "card": {**CARD, "actions": [
        {"id": "a", "label": "A", "url": "javascript:alert(1)"}]}}),
    ("card action ids repeat", "service.post", {"conv": "s:o", "cid": "c", "card": {**CARD, "actions": [
        {"id": "a", "label": "A"}, {"id": "a", "label": "B"}]}}),
    ("card too many actions", "service.post", {"conv": "s:o", "cid": "c", "card": {**CARD, "actions": [
        {"id": f"a{i}", "label": "A"} for i in range(6)]}}),
]


@pytest.mark.parametrize(("what", "op", "body"), BAD, ids=[w for w, _, _ in BAD])
async def test_bad_input_to_every_service_op_is_bad_request(app: Any, what: str, op: str, body: Any) -> None:
    await ok(app, "service.provision", {"owner": "o", "fellow": "f"})
    got, reply = await admin_call(app, op, body)
    assert (got, reply["error"]["code"]) == (400, "bad_request"), (what, reply)
    assert reply["error"]["message"]
    assert read_db(app.config.db_path, "SELECT count(*) FROM messages WHERE conv = 's:o'") == [(1,)]  # nothing written
