"""Circles: create, discover, join/leave, members, roles, announcements, mutes, mentions, recall."""

from __future__ import annotations

from typing import Any

import pytest
from chatd_protocol.ops import CATEGORIES
from support import FakeClock, circle


@pytest.fixture
async def clocked(make_server: Any, clients: Any, fake_clock: FakeClock) -> Any:
    """A server on a fake wall clock; returns a client factory for it."""
    app = await make_server(clock=fake_clock, recall_window_s=120)

    async def make(user: str | None = None, type: str = "owner", **kw: Any) -> Any:
        return await clients(app, user, type, **kw)

    return make


@pytest.mark.parametrize("category", CATEGORIES)
async def test_create_each_category(connect: Any, category: str) -> None:
    alice = await connect("alice", name="Alice")
    info = await alice.call("circle.create", name="My circle", category=category, description="about")
    assert info["conv"].startswith("c:")
    assert info["kind"] == "circle" and info["category"] == category
    assert (info["name"], info["description"], info["owner"], info["members"]) == ("My circle", "about", "alice", 1)
    assert info["certified"] is False and info["announcement"] == ""
    assert info["last_seq"] == 1
    msg = await alice.next_msg()
    assert msg["seq"] == 1 and msg["kind"] == "system"
    assert msg["event"] == {"type": "created", "name": "My circle"}
    assert msg["author"]["name"] == "Alice"
    (mine,) = (await alice.call("convs"))["convs"]
    assert mine["conv"] == info["conv"] and mine["role"] == "owner"


async def test_certified_only_staff(connect: Any) -> None:
    owner = await connect("owner1", "owner")
    await owner.fail("circle.create", "forbidden", name="Official", category="interest", certified=True)
    for t in ("fan", "deposit", "bot"):
        c = await connect(f"u-{t}", t)
        await c.fail("circle.create", "forbidden", name="Official", category="interest", certified=True)
    staff = await connect("nio-staff", "staff", roles=["fellow"])
    info = await staff.call("circle.create", name="Official", category="interest", certified=True)
    assert info["certified"] is True
    listed = (await owner.call("circle.list"))["convs"]
    assert [c["conv"] for c in listed] == [info["conv"]]  # the refused ones created nothing


async def test_create_bad_input(connect: Any) -> None:
    alice = await connect("alice")
    await alice.fail("circle.create", "bad_request", name="", category="city")
    await alice.fail("circle.create", "bad_request", name="x" * 65, category="city")
    await alice.fail("circle.create", "bad_request", name="x", category="cars")
    await alice.fail("circle.create", "bad_request", name="x", category="city", description="d" * 501)
    await alice.fail("circle.create", "bad_request", name="x", category="city", certified=1)
    await alice.fail("circle.create", "bad_request", name=["x"], category="city")
    await alice.fail("circle.create", "bad_request", name="x", category="city", owner="bob")
    assert (await alice.call("circle.list"))["convs"] == []


async def test_list_by_category_with_paging(connect: Any) -> None:
    alice = await connect("alice")
    city = [(await alice.call("circle.create", name=f"city {i}", category="city"))["conv"] for i in range(12)]
    interest = [(await alice.call("circle.create", name=f"i {i}", category="interest"))["conv"] for i in range(3)]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        args: dict[str, Any] = {"category": "city", "limit": 5}
        if after:
            args["after"] = after
        page = await alice.call("circle.list", **args)
        pages += 1
        assert len(page["convs"]) <= 5
        assert all(c["category"] == "city" for c in page["convs"])
        seen += [c["conv"] for c in page["convs"]]
        after = page["next"]
        if after is None:
            break
        assert after == page["convs"][-1]["conv"]
    assert pages == 3
    assert sorted(seen) == sorted(city) and len(seen) == len(set(seen))
    everything = (await alice.call("circle.list", limit=100))["convs"]
    assert sorted(c["conv"] for c in everything) == sorted(city + interest)
    assert (await alice.call("circle.list", limit=100))["next"] is None
    assert len((await alice.call("circle.list"))["convs"]) == 15  # default limit 20
    assert (await alice.call("circle.list", category="family"))["convs"] == []
    # DMs never show up in discovery
    await alice.call("dm.open", user="bob")
    assert len((await alice.call("circle.list", limit=100))["convs"]) == 15
    for bad in ({"limit": 0}, {"limit": 101}, {"category": "x"}, {"after": "c 1"}, {"limit": "5"}):
        await alice.fail("circle.list", "bad_request", **bad)


async def test_join_leave_with_system_messages(connect: Any) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    carol = await connect("carol")
    conv = await circle(alice)
    info = await bob.call("circle.join", conv=conv)
    assert info["members"] == 2 and info["conv"] == conv
    assert info["last_seq"] == 2
    for c in (alice, bob):
        msg = await c.next_msg()
        assert msg["event"] == {"type": "join", "user": "bob"} and msg["seq"] == 2 and msg["from"] == "bob"
    await carol.call("circle.join", conv=conv)
    for c in (alice, bob, carol):
        assert (await c.next_msg())["event"] == {"type": "join", "user": "carol"}
    assert await bob.call("circle.leave", conv=conv) == {}
    for c in (alice, carol):
        msg = await c.next_msg()
        assert msg["event"] == {"type": "leave", "user": "bob"} and msg["seq"] == 4
    # the leaver no longer gets pushes, nor can it send or read
    await alice.call("send", conv=conv, cid="a1", text="bye bob")
    assert (await carol.next_msg())["text"] == "bye bob"
    await bob.no_push(kind="msg")
    await bob.fail("send", "not_member", conv=conv, cid="b1", text="wait")
    await bob.fail("history", "not_member", conv=conv)
    await bob.fail("circle.leave", "not_member", conv=conv)
    # and can come back
    await bob.call("circle.join", conv=conv)
    assert (await bob.next_msg())["event"] == {"type": "join", "user": "bob"}


async def test_join_leave_errors(connect: Any) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    conv = await circle(alice, bob)
    await bob.fail("circle.join", "conflict", conv=conv)
    await alice.fail("circle.join", "conflict", conv=conv)
    await alice.fail("circle.leave", "conflict", conv=conv)  # the owner cannot leave
    await bob.fail("circle.join", "not_found", conv="c:9999")
    await bob.fail("circle.leave", "not_found", conv="c:9999")
    dm = (await alice.call("dm.open", user="carol"))["conv"]
    await bob.fail("circle.join", "not_found", conv=dm)  # a DM is no circle
    await alice.fail("circle.leave", "not_found", conv=dm)
    await bob.fail("circle.join", "bad_request", conv=5)
    await bob.fail("circle.join", "bad_request")
    members = (await alice.call("members", conv=conv))["members"]
    assert [(m["user"], m["role"]) for m in members] == [("alice", "owner"), ("bob", "member")]


async def test_members_paging(connect: Any) -> None:
    alice = await connect("alice")
    others = [await connect(f"m{i:02d}") for i in range(7)]
    conv = await circle(alice, *others)
    seen: list[str] = []
    after = None
    while True:
        args: dict[str, Any] = {"conv": conv, "limit": 3}
        if after:
            args["after"] = after
        page = await others[0].call("members", **args)
        seen += [m["user"] for m in page["members"]]
        assert all(m["muted_until"] == 0 for m in page["members"])
        after = page["next"]
        if after is None:
            break
    assert seen == sorted(["alice"] + [f"m{i:02d}" for i in range(7)])
    outsider = await connect("zz")
    await outsider.fail("members", "not_member", conv=conv)
    await outsider.fail("members", "not_found", conv="c:404")
    await alice.fail("members", "bad_request", conv=conv, limit=201)
    await alice.fail("members", "bad_request", conv=conv, after="not a user")


async def test_roles(connect: Any) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    carol = await connect("carol")
    conv = await circle(alice, bob, carol)
    # a member cannot promote anyone, including themselves
    await bob.fail("circle.role", "forbidden", conv=conv, user="bob", role="admin")
    await bob.fail("circle.role", "forbidden", conv=conv, user="carol", role="admin")
    assert await alice.call("circle.role", conv=conv, user="bob", role="admin") == {}
    for c in (alice, bob, carol):
        msg = await c.next_msg()
        assert msg["event"] == {"type": "role", "user": "bob", "role": "admin"} and msg["from"] == "alice"
    # an admin can promote and demote members
    await bob.call("circle.role", conv=conv, user="carol", role="admin")
    await bob.call("circle.role", conv=conv, user="carol", role="member")
    # nobody changes the owner's role
    await bob.fail("circle.role", "forbidden", conv=conv, user="alice", role="member")
    await alice.fail("circle.role", "forbidden", conv=conv, user="alice", role="member")
    await alice.fail("circle.role", "not_member", conv=conv, user="stranger", role="admin")
    await alice.fail("circle.role", "bad_request", conv=conv, user="bob", role="owner")
    outsider = await connect("zz")
    await outsider.fail("circle.role", "not_member", conv=conv, user="zz", role="admin")
    await outsider.fail("circle.role", "not_found", conv="c:404", user="zz", role="admin")
    roles = {m["user"]: m["role"] for m in (await carol.call("members", conv=conv))["members"]}
    assert roles == {"alice": "owner", "bob": "admin", "carol": "member"}


async def test_announce(connect: Any) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    conv = await circle(alice, bob)
    await bob.fail("circle.announce", "forbidden", conv=conv, text="I am in charge")
    d = await alice.call("circle.announce", conv=conv, text="Meetup Saturday 10:00")
    for c in (alice, bob):
        msg = await c.next_msg()
        assert msg["kind"] == "system" and msg["seq"] == d["seq"]
        assert msg["event"] == {"type": "announce", "text": "Meetup Saturday 10:00"}
    (listed,) = (await bob.call("circle.list"))["convs"]
    assert listed["announcement"] == "Meetup Saturday 10:00"
    await alice.call("circle.role", conv=conv, user="bob", role="admin")
    await bob.call("circle.announce", conv=conv, text="")  # an admin clears it
    (listed,) = (await bob.call("circle.list"))["convs"]
    assert listed["announcement"] == ""
    await alice.fail("circle.announce", "bad_request", conv=conv, text="t" * 2001)
    outsider = await connect("zz")
    await outsider.fail("circle.announce", "not_member", conv=conv, text="hi")


async def test_mute_unmute_and_expiry(clocked: Any, fake_clock: FakeClock) -> None:
    alice = await clocked("alice")
    bob = await clocked("bob")
    carol = await clocked("carol")
    conv = await circle(alice, bob, carol)
    await carol.fail("circle.mute", "forbidden", conv=conv, user="bob", seconds=60)
    d = await alice.call("circle.mute", conv=conv, user="bob", seconds=60)
    assert d["until"] == fake_clock.now + 60_000
    for c in (alice, bob, carol):
        assert (await c.next_msg())["event"] == {"type": "mute", "user": "bob", "until": d["until"]}
    await bob.fail("send", "muted", conv=conv, cid="m1", text="let me speak")
    members = {m["user"]: m["muted_until"] for m in (await bob.call("members", conv=conv))["members"]}
    assert members["bob"] == d["until"] and members["carol"] == 0
    # time passes: the mute expires by itself
    fake_clock.advance(59)
    await bob.fail("send", "muted", conv=conv, cid="m2", text="now?")
    fake_clock.advance(2)
    await bob.call("send", conv=conv, cid="m3", text="free again")
    # mute again, then unmute explicitly
    await alice.call("circle.mute", conv=conv, user="bob", seconds=3600)
    await bob.fail("send", "muted", conv=conv, cid="m4", text="hm")
    assert (await alice.call("circle.mute", conv=conv, user="bob", seconds=0))["until"] == 0
    await bob.call("send", conv=conv, cid="m5", text="unmuted")
    # admins cannot be muted; limits are checked
    await alice.call("circle.role", conv=conv, user="carol", role="admin")
    await carol.fail("circle.mute", "forbidden", conv=conv, user="alice", seconds=60)
    await alice.fail("circle.mute", "forbidden", conv=conv, user="carol", seconds=60)
    await alice.fail("circle.mute", "not_member", conv=conv, user="stranger", seconds=60)
    await alice.fail("circle.mute", "bad_request", conv=conv, user="bob", seconds=30 * 86400 + 1)
    await alice.fail("circle.mute", "bad_request", conv=conv, user="bob", seconds=-1)


async def test_mute_survives_reconnect_and_restart_of_cache(clocked: Any) -> None:
    alice = await clocked("alice")
    bob = await clocked("bob")
    conv = await circle(alice, bob)
    await alice.call("circle.mute", conv=conv, user="bob", seconds=600)
    await bob.close()
    bob2 = await clocked("bob", encoding="json")
    await bob2.fail("send", "muted", conv=conv, cid="x", text="new socket")
    (view,) = [c for c in (await bob2.call("convs"))["convs"] if c["conv"] == conv]
    assert view["muted_until"] > 0


async def test_mentions_filtered_to_members(connect: Any) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    conv = await circle(alice, bob)
    await alice.call("send", conv=conv, cid="m", text="@bob @ghost", mentions=["bob", "ghost", "bob"])
    msg = await bob.next_msg()
    assert msg["mentions"] == ["bob"]
    await alice.call("send", conv=conv, cid="n", text="@ghost", mentions=["ghost"])
    msg = await bob.next_msg()
    assert "mentions" not in msg and "mention_all" not in msg
    hist = (await bob.call("history", conv=conv))["messages"]
    assert hist[-2]["mentions"] == ["bob"] and "mentions" not in hist[-1]
    await alice.fail("send", "bad_request", conv=conv, cid="o", text="x", mentions=[f"u{i}" for i in range(51)])
    await alice.fail("send", "bad_request", conv=conv, cid="o", text="x", mentions="bob")


async def test_mention_all_admin_only(connect: Any) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    conv = await circle(alice, bob)
    await bob.fail("send", "forbidden", conv=conv, cid="b", text="@all", mention_all=True)
    await alice.call("send", conv=conv, cid="a", text="@all", mention_all=True)
    assert (await bob.next_msg())["mention_all"] is True
    await alice.call("circle.role", conv=conv, user="bob", role="admin")
    await bob.next_msg()
    await bob.call("send", conv=conv, cid="b2", text="@all", mention_all=True)
    await alice.call("send", conv=conv, cid="a2", text="quiet", mention_all=False)
    msgs = [await alice.next_msg() for _ in range(2)]
    assert msgs[0]["mention_all"] is True and "mention_all" not in msgs[1]
    # never in a DM
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    await alice.fail("send", "forbidden", conv=dm, cid="d", text="@all", mention_all=True)


async def test_recall_own_within_window(clocked: Any, fake_clock: FakeClock) -> None:
    alice = await clocked("alice")
    bob = await clocked("bob")
    conv = await circle(alice, bob)
    ack = await bob.call("send", conv=conv, cid="oops", text="my phone number is 555-0199", mentions=["alice"])
    await alice.next_msg()
    fake_clock.advance(119)
    d = await bob.call("recall", conv=conv, seq=ack["seq"])
    assert d["seq"] == ack["seq"] + 1
    for c in (alice, bob):
        msgs = [m for m in [await c.next_msg() for _ in range(1 if c is alice else 2)] if m["kind"] == "system"]
        assert msgs[-1]["event"] == {"type": "recall", "seq": ack["seq"]} and msgs[-1]["from"] == "bob"
    hist = (await alice.call("history", conv=conv))["messages"]
    recalled = next(m for m in hist if m["seq"] == ack["seq"])
    assert recalled["recalled"] is True and recalled["cid"] == "oops" and recalled["from"] == "bob"
    assert "text" not in recalled and "mentions" not in recalled
    assert [m["seq"] for m in hist] == list(range(1, d["seq"] + 1))
    await bob.fail("recall", "conflict", conv=conv, seq=ack["seq"])


async def test_recall_window_and_admin_recall(clocked: Any, fake_clock: FakeClock) -> None:
    alice = await clocked("alice")
    bob = await clocked("bob")
    carol = await clocked("carol")
    conv = await circle(alice, bob, carol)
    ack = await bob.call("send", conv=conv, cid="late", text="old news")
    fake_clock.advance(121)
    await bob.fail("recall", "recall_window", conv=conv, seq=ack["seq"])
    await carol.fail("recall", "forbidden", conv=conv, seq=ack["seq"])  # someone else's
    fake_clock.advance(86400)
    await alice.call("recall", conv=conv, seq=ack["seq"])  # the owner may, any time
    ack2 = await carol.call("send", conv=conv, cid="c1", text="spam")
    await alice.call("circle.role", conv=conv, user="bob", role="admin")
    fake_clock.advance(3600)
    await bob.call("recall", conv=conv, seq=ack2["seq"])  # so may an admin
    await bob.fail("recall", "not_found", conv=conv, seq=1)  # system messages cannot be recalled
    await bob.fail("recall", "not_found", conv=conv, seq=9999)
    await bob.fail("recall", "bad_request", conv=conv, seq=0)
    await bob.fail("recall", "bad_request", conv=conv, seq="1")


async def test_recall_in_dm_own_only(clocked: Any, fake_clock: FakeClock) -> None:
    alice = await clocked("alice")
    bob = await clocked("bob")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    ack = await alice.call("send", conv=conv, cid="x", text="hello")
    await bob.fail("recall", "forbidden", conv=conv, seq=ack["seq"])
    await alice.call("recall", conv=conv, seq=ack["seq"])
    ack2 = await alice.call("send", conv=conv, cid="y", text="hello again")
    fake_clock.advance(121)
    await alice.fail("recall", "recall_window", conv=conv, seq=ack2["seq"])


async def test_a_mute_binds_across_leaving_and_joining_again(clocked: Any, fake_clock: FakeClock) -> None:
    """Issue 10, defect 5: leaving and rejoining lifted the mute."""
    alice = await clocked("alice")
    bob = await clocked("bob")
    conv = await circle(alice, bob)
    await alice.call("circle.mute", conv=conv, user="bob", seconds=600)
    await bob.call("circle.leave", conv=conv)
    await bob.call("circle.join", conv=conv)
    await bob.fail("send", "muted", conv=conv, cid="m1", text="free again?")
    members = {m["user"]: m["muted_until"] for m in (await bob.call("members", conv=conv))["members"]}
    assert members["bob"] == fake_clock.now + 600_000
    fake_clock.advance(601)
    await bob.call("send", conv=conv, cid="m2", text="now I am")
    await bob.call("circle.leave", conv=conv)  # an ended mute does not come back
    await bob.call("circle.join", conv=conv)
    await bob.call("send", conv=conv, cid="m3", text="still free")
