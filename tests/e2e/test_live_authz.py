"""Who may do what in a live session, and what every live and poll op does with bad
input (issue 12). The roles of the issue: a viewer, the asker of a question, a
moderator, a host, staff with no role in the session (an executive who may make
sessions), the host of another session, and a backend on the admin API. Each cell runs
on a session of its own, prepared so that the op could succeed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import FakeClock, admin_call

ROLES = ("viewer", "asker", "moderator", "host", "staff", "other_host", "admin")
# user, type, token roles
PEOPLE = {"viewer": ("vic", "owner", []), "asker": ("ada", "owner", []), "moderator": ("mo", "staff", []),
          "host": ("hu", "staff", ["exec"]), "staff": ("xi", "staff", ["exec"]),
          "other_host": ("oz", "staff", ["host"])}
UO = "unknown_op"  # the admin API serves a backend's ops only
F = "forbidden"
ALL_USERS = ("ok", "ok", "ok", "ok", "ok", "ok", UO)
RUNNERS = (F, F, "ok", "ok", F, F, "ok")  # the session's hosts and moderators, and a backend
HOSTS = (F, F, F, "ok", F, F, "ok")  # the session's hosts, and a backend
# fmt: off
LIVE_MATRIX: dict[str, tuple[str, ...]] = {
    # op (+variant)       viewer   asker        moderator  host   staff  other_host  admin
    "live.create":        (F,      F,           F,         "ok",  "ok",  "ok",       "ok"),
    "live.update":        HOSTS,
    "live.state":         HOSTS,
    "live.list":          ALL_USERS,
    "live.follow":        ALL_USERS,
    "live.join":          ALL_USERS,
    "live.leave":         ALL_USERS,
    "live.ask":           ALL_USERS,
    "live.vote":          ("ok",   F,           "ok",      "ok",  "ok",  "ok",       UO),
    "live.moderate":      RUNNERS,
    "live.moderate+approve": RUNNERS,
    "live.merge":         RUNNERS,
    "live.answer":        HOSTS,
    "live.mark+pin":      HOSTS,
    "live.mark+dismiss":  HOSTS,
    "live.queue":         RUNNERS,
    "live.chat":          ALL_USERS,
    "live.mute":          RUNNERS,
    "live.archive":       ("ok",   "ok",        "ok",      "ok",  "ok",  "ok",       "ok"),
    "poll.create":        (F,      F,           "ok",      "ok",  F,     F,          UO),
    "poll.vote":          ALL_USERS,
    "poll.close":         (F,      F,           "ok",      "ok",  F,     F,          UO),
    "poll.get":           ("ok",   "ok",        "ok",      "ok",  "ok",  "ok",       "ok"),
}
# fmt: on


@pytest.fixture
async def app(make_server: Any, fake_clock: FakeClock) -> Any:
    return await make_server(admin_port=0, clock=fake_clock)


async def ok(app: Any, op: str, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = await admin_call(app, op, body)
    assert status == 200, reply
    return dict(reply["ok"])


async def prepared(app: Any, socks: dict[str, Any], n: int, approval: bool = False) -> dict[str, Any]:
    """A live session run by host ``hu`` and moderator ``mo`` with two open questions
    (1 by the asker, 2 by another owner) and a poll by the host."""
    s = await ok(app, "live.create", {"cid": f"cell{n}", "title": f"面对面 {n}", "hosts": ["hu"],
                                      "moderators": ["mo"], "ask_interval_s": 0, "approval": approval})
    sid = s["session"]
    await ok(app, "live.state", {"session": sid, "state": "live"})
    q1 = (await socks["asker"].call("live.ask", session=sid, cid=f"q{n}", text="换电站什么时候来合肥?"))["question"]
    q2 = (await socks["other_owner"].call("live.ask", session=sid, cid=f"q{n}", text="when in Hefei?"))["question"]
    for q in (q1, q2):
        if approval:
            await socks["moderator"].call("live.moderate", session=sid, id=q["id"], action="approve")
    poll = await socks["host"].call("poll.create", conv=sid, cid=f"p{n}", question="Next?", options=["A", "B"],
                                    closes_ts=app.clock.wall_ms() + 3_600_000)
    return {"session": sid, "q1": q1["id"], "q2": q2["id"], "poll": poll["poll"]}


async def test_every_live_op_by_every_role(app: Any, clients: Any) -> None:
    socks: dict[str, Any] = {}
    for role, (user, type_, roles) in PEOPLE.items():
        socks[role] = await clients(app, user, type_, roles=roles)
    socks["other_owner"] = await clients(app, "otto", "owner")
    await ok(app, "live.create", {"cid": "other", "title": "another session", "hosts": ["oz"]})
    wrong: list[str] = []
    for n, (cell, outcomes) in enumerate(LIVE_MATRIX.items()):
        op, _, variant = cell.partition("+")
        for role, want in zip(ROLES, outcomes, strict=True):
            p = await prepared(app, socks, n * 10 + ROLES.index(role), approval=variant == "approve")
            sid, q1, q2 = p["session"], p["q1"], p["q2"]
            if op == "live.archive":
                await ok(app, "live.state", {"session": sid, "state": "ended"})
            if variant == "approve":  # a fresh question waiting for approval
                pending = await socks["other_owner"].call("live.ask", session=sid, cid=f"pending{n}{role}",
                                                             text="pending?")
                q1 = pending["question"]["id"]
            d: dict[str, Any] = {
                "live.create": {"cid": f"made{n}{role}", "title": "新的"},
                "live.update": {"session": sid, "title": "renamed", "slow_s": 5},
                "live.state": {"session": sid, "state": "ended"},
                "live.list": {"state": "live"},
                "live.follow": {"session": sid},
                "live.join": {"session": sid},
                "live.leave": {"session": sid},
                "live.ask": {"session": sid, "cid": f"cell{role}", "text": "a question"},
                "live.vote": {"session": sid, "id": q1},
                "live.moderate": {"session": sid, "id": q1, "action": "approve" if variant else "hide"},
                "live.merge": {"session": sid, "id": q2, "into": q1},
                "live.answer": {"session": sid, "id": q1, "text": "next spring"},
                "live.mark": {"session": sid, "id": q1, "action": variant},
                "live.queue": {"session": sid},
                "live.chat": {"session": sid, "cid": f"line{role}", "text": "加油"},
                "live.mute": {"session": sid, "user": "otto", "seconds": 60},
                "live.archive": {"session": sid},
                "poll.create": {"conv": sid, "cid": f"cell{role}", "question": "Which?", "options": ["x", "y"],
                                "closes_ts": app.clock.wall_ms() + 60_000},
                "poll.vote": {"poll": p["poll"], "options": [1]},
                "poll.close": {"poll": p["poll"]},
                "poll.get": {"poll": p["poll"]},
            }[op]
            if role == "admin":
                status, reply = await admin_call(app, op, d)
                got = "ok" if status == 200 else reply["error"]["code"]
                if status != 200 and got != UO:
                    assert status in (403, 404, 409), (cell, status, reply)
            else:
                r = await socks[role].request(op, **d)
                got = "ok" if not hasattr(r, "code") else r.code
                if op == "live.join" and got == "ok":
                    assert r.d["role"] == {"moderator": "moderator", "host": "host"}.get(role), (role, r.d["role"])
                    await socks[role].call("live.leave", session=sid)  # a socket views at most 4 sessions
            if got != want:
                wrong.append(f"{cell} by {role}: {got}, the table says {want}")
    assert not wrong, "\n".join(wrong)


async def test_what_each_role_sees_of_an_anonymous_question(app: Any, clients: Any) -> None:
    socks = {role: await clients(app, user, type_, roles=roles) for role, (user, type_, roles) in PEOPLE.items()}
    s = await ok(app, "live.create", {"cid": "anon", "title": "anon", "hosts": ["hu"], "moderators": ["mo"],
                                      "anonymous": True})
    sid = s["session"]
    await ok(app, "live.state", {"session": sid, "state": "live"})
    for role in ("viewer", "moderator", "host", "staff", "other_host"):
        await socks[role].call("live.join", session=sid)
    q = (await socks["asker"].call("live.ask", session=sid, cid="a", text="匿名问题", anonymous=True))["question"]
    assert q["asker"] == "ada"  # the asker's own reply
    for role in ("viewer", "staff", "other_host"):
        shown = await socks[role].next_push(kind="live.question")
        assert shown.d["asker"] is None and shown.d["author"] is None and shown.d["text"] == "匿名问题", role
        await socks[role].no_push(kind="live.mod")
    for role in ("moderator", "host"):
        mod = await socks[role].next_push(kind="live.mod")
        assert mod.d["asker"] == "ada", role
    status, reply = await admin_call(app, "live.queue", {"session": sid})
    assert status == 200 and [x["asker"] for x in reply["ok"]["questions"]] == ["ada"]


# -- bad input: a clear error code, the socket stays open, nothing changes ------------------

S = "l:1"
BIG = "x" * 5000
# op -> [(arguments, the error code)]
BAD: dict[str, list[tuple[dict[str, Any], str]]] = {
    "live.create": [({}, "bad_request"), ({"cid": "c"}, "bad_request"), ({"cid": "c", "title": ""}, "bad_request"),
                    ({"cid": "c", "title": 7}, "bad_request"), ({"cid": "c", "title": BIG}, "bad_request"),
                    ({"cid": "c", "title": "t", "slow_s": 2}, "bad_request"),
                    ({"cid": "c", "title": "t", "slow_s": 121}, "bad_request"),
                    ({"cid": "c", "title": "t", "hosts": "hu"}, "bad_request"),
                    ({"cid": "c", "title": "t", "hosts": ["u"] * 21}, "bad_request"),
                    ({"cid": "c", "title": "t", "rooms": [f"r{i}" for i in range(70)]}, "bad_request"),
                    ({"cid": "c", "title": "t", "rooms": ["Not A Room!"]}, "bad_request"),
                    ({"cid": "c", "title": "t", "approval": "yes"}, "bad_request"),
                    ({"cid": "c", "title": "t", "starts_ts": -1}, "bad_request"),
                    ({"cid": "c" * 65, "title": "t"}, "bad_request"),
                    ({"cid": "c", "title": "t", "extra": 1}, "bad_request")],
    "live.update": [({"session": S, "title": ""}, "bad_request"), ({"session": S, "slow_s": "5"}, "bad_request"),
                    ({"session": "x:1", "title": "t"}, "not_found"), ({"session": "l:0", "title": "t"}, "not_found"),
                    ({"session": 1}, "bad_request")],
    "live.state": [({"session": S, "state": "scheduled"}, "bad_request"), ({"session": S, "state": 1}, "bad_request"),
                   ({"session": S}, "bad_request"), ({"session": "l:abc", "state": "live"}, "not_found")],
    "live.list": [({"state": "hot"}, "bad_request"), ({"limit": 0}, "bad_request"), ({"limit": 101}, "bad_request"),
                  ({"limit": "5"}, "bad_request")],
    "live.follow": [({"session": S, "on": "yes"}, "bad_request"), ({}, "bad_request"),
                    ({"session": "l:999999"}, "not_found")],
    "live.join": [({"session": S, "room": "nowhere"}, "not_found"), ({"session": S, "room": 5}, "bad_request"),
                  ({"session": S, "room": "R" * 100}, "bad_request"), ({"session": ["l:1"]}, "bad_request"),
                  ({"session": "l:999999"}, "not_found")],
    "live.leave": [({}, "bad_request"), ({"session": None}, "bad_request")],
    "live.ask": [({"session": S, "cid": "c", "text": ""}, "bad_request"),
                 ({"session": S, "cid": "c", "text": "q" * 301}, "too_long"),
                 ({"session": S, "cid": "c", "text": BIG}, "bad_request"),
                 ({"session": S, "cid": "c", "text": 3}, "bad_request"),
                 ({"session": S, "cid": "c", "text": "q", "anonymous": 1}, "bad_request"),
                 ({"session": S, "text": "q"}, "bad_request"),
                 ({"session": "l:999999", "cid": "c", "text": "q"}, "not_found")],
    "live.vote": [({"session": S, "id": 0}, "bad_request"), ({"session": S, "id": "1"}, "bad_request"),
                  ({"session": S, "id": 1, "on": "no"}, "bad_request"), ({"session": S, "id": 999}, "not_found"),
                  ({"session": S, "id": 2**53}, "bad_request")],
    "live.moderate": [({"session": S, "id": 1, "action": "delete"}, "bad_request"),
                      ({"session": S, "id": 1}, "bad_request"), ({"session": S, "id": 999, "action": "hide"}, "not_found")],
    "live.merge": [({"session": S, "id": 1, "into": 1}, "bad_request"), ({"session": S, "id": 1}, "bad_request"),
                   ({"session": S, "id": 1, "into": "2"}, "bad_request")],
    "live.answer": [({"session": S, "id": 1, "text": ""}, "bad_request"),
                    ({"session": S, "id": 1, "text": "a" * 4001}, "bad_request"),
                    ({"session": S, "id": 1, "live": "yes"}, "bad_request")],
    "live.mark": [({"session": S, "id": 1, "action": "star"}, "bad_request"), ({"session": S, "id": 1}, "bad_request")],
    "live.queue": [({"session": S, "state": "waiting"}, "bad_request"), ({"session": S, "limit": 201}, "bad_request"),
                   ({"session": S, "after": -1}, "bad_request"), ({"session": "l:999999"}, "not_found")],
    "live.chat": [({"session": S, "cid": "c", "text": ""}, "bad_request"),
                  ({"session": S, "cid": "c", "text": "l" * 501}, "too_long"),
                  ({"session": S, "cid": "c", "text": "l", "room": "nowhere"}, "not_found"),
                  ({"session": S, "text": "l"}, "bad_request"), ({"session": S, "cid": 1, "text": "l"}, "bad_request")],
    "live.mute": [({"session": S, "user": "otto"}, "bad_request"),
                  ({"session": S, "user": "otto", "seconds": -1}, "bad_request"),
                  ({"session": S, "user": "otto", "seconds": 31 * 86400}, "bad_request"),
                  ({"session": S, "user": "", "seconds": 5}, "bad_request")],
    "live.archive": [({"session": S}, "conflict"), ({}, "bad_request"), ({"session": "l:999999"}, "not_found")],
    "poll.create": [({"conv": S, "cid": "c", "question": "q", "options": ["a"], "closes_ts": 2**42}, "bad_request"),
                    ({"conv": S, "cid": "c", "question": "q", "options": [f"o{i}" for i in range(11)],
                      "closes_ts": 2**42}, "bad_request"),
                    ({"conv": S, "cid": "c", "question": "q", "options": ["a", 2], "closes_ts": 2**42}, "bad_request"),
                    ({"conv": S, "cid": "c", "question": "q", "options": ["a", "b"]}, "bad_request"),
                    ({"conv": S, "cid": "c", "question": "q", "options": ["a", "b"], "closes_ts": 1}, "bad_request"),
                    ({"conv": S, "cid": "c", "question": BIG, "options": ["a", "b"], "closes_ts": 2**42},
                     "bad_request"),
                    ({"conv": "l:999999", "cid": "c", "question": "q", "options": ["a", "b"], "closes_ts": 2**42},
                     "not_found")],
    "poll.vote": [({"poll": 1, "options": []}, "bad_request"), ({"poll": 1, "options": [7]}, "bad_request"),
                  ({"poll": 1, "options": [0, 1]}, "bad_request"), ({"poll": 1, "options": ["0"]}, "bad_request"),
                  ({"poll": 999, "options": [0]}, "not_found"), ({"poll": "1", "options": [0]}, "bad_request")],
    "poll.close": [({"poll": 0}, "bad_request"), ({}, "bad_request"), ({"poll": 999}, "not_found")],
    "poll.get": [({"poll": -1}, "bad_request"), ({"poll": 999}, "not_found"), ({"poll": 1.5}, "bad_request")],
}


async def test_every_live_op_refuses_bad_input_clearly_and_changes_nothing(app: Any, clients: Any) -> None:
    host = await clients(app, "hu", "staff", roles=["exec"])
    s = await ok(app, "live.create", {"cid": "bad", "title": "bad input", "hosts": ["hu"]})
    assert s["session"] == S
    await ok(app, "live.state", {"session": S, "state": "live"})
    q = (await host.call("live.ask", session=S, cid="q", text="the only question"))["question"]
    assert q["id"] == 1
    await host.call("poll.create", conv=S, cid="p", question="Which?", options=["a", "b"],
                    closes_ts=app.clock.wall_ms() + 60_000)
    before = await host.call("live.join", session=S)
    wrong: list[str] = []
    for op, cases in BAD.items():
        for d, want in cases:
            r = await host.request(op, **d)
            got = r.code if hasattr(r, "code") else "ok"
            if got != want:
                wrong.append(f"{op} {str(d)[:80]}: {got}, expected {want}")
    assert not wrong, "\n".join(wrong)
    # frames whose d is not an object, or carries an unknown field of 5,000 characters
    loop = asyncio.get_running_loop()
    for rid, op, d in (("g1", "live.join", S), ("g2", "live.join", [S]),
                       ("g3", "live.vote", {"session": S, "id": 1, "on": True, "x": BIG})):
        fut: asyncio.Future[Any] = loop.create_future()
        host.pending[rid] = fut
        await host.send_frame({"id": rid, "op": op, "d": d})
        assert (await asyncio.wait_for(fut, 5)).code == "bad_request", (op, d)
    again = host
    after = await again.call("live.join", session=S)
    assert after["questions"] == before["questions"] and after["session"]["title"] == "bad input"
    assert after["polls"] == before["polls"] and after["lines"] == before["lines"]
    status, reply = await admin_call(app, "live.state", {"session": S, "state": "paused"})
    assert (status, reply["error"]["code"]) == (400, "bad_request")
    status, reply = await admin_call(app, "live.create", {"cid": "c", "title": 5})
    assert (status, reply["error"]["code"]) == (400, "bad_request")
