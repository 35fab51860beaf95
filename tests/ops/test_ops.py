"""Ops called without a socket, through the caller context (chatd/ops/:
``app.ops.run(caller, op, args)``), on a real server and SQLite file: what an
HTTP admin request or a bot would get. And the op table's authorization."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from chatd_protocol import CODECS, MSGPACK, OPS, RULES, Err, RequestError, Scope
from support import read_db, texts, token

from chatd.app import App
from chatd.auth import Identity, verify_token
from chatd.config import DEV_SECRET
from chatd.core.caller import Caller


def caller(user: str, type: str = "owner", **kw: Any) -> Caller:
    """A caller as an HTTP request would make one: from a verified token, no sink."""
    return Caller.of(verify_token(token(user, type, **kw), DEV_SECRET))


async def refused(app: App, who: Caller, op: str, d: dict[str, Any], code: Err) -> str:
    with pytest.raises(RequestError) as info:
        await app.ops.run(who, op, d)
    assert info.value.code == code, f"{op}: {info.value.code} ({info.value.message})"
    assert info.value.message
    return info.value.message


async def test_a_circle_conversation_through_ops_alone(server: App, db_path: Path) -> None:
    alice = caller("alice", name="Alice")
    bob = Caller.of(Identity("bob", "Bob", "owner", (), (), int(time.time()) + 60))
    assert alice.sink is None and alice.scopes == frozenset({Scope.USER})
    info = await server.ops.run(alice, "circle.create", {"name": "Model Y owners", "category": "interest"})
    conv = info["conv"]
    assert conv.startswith("c:")
    assert (info["kind"], info["owner"], info["members"], info["last_seq"]) == ("circle", "alice", 1, 1)
    joined = await server.ops.run(bob, "circle.join", {"conv": conv})
    assert (joined["members"], joined["last_seq"]) == (2, 2)

    ack = await server.ops.run(alice, "send", {"conv": conv, "cid": "m1", "text": "charging tips?"})
    assert (ack["conv"], ack["seq"], ack["dup"]) == (conv, 3, False)
    # the ack comes once the message is committed: a fresh connection sees the row
    assert read_db(db_path, "SELECT seq, pos, sender FROM messages WHERE conv = ? AND cid = 'm1'", (conv,)) == [
        (3, ack["pos"], "alice")
    ]
    again = await server.ops.run(alice, "send", {"conv": conv, "cid": "m1", "text": "charging tips?"})
    assert (again["seq"], again["pos"], again["dup"]) == (3, ack["pos"], True)

    hist = (await server.ops.run(bob, "history", {"conv": conv}))["messages"]
    assert [m["seq"] for m in hist] == [1, 2, 3]
    assert (hist[-1]["text"], hist[-1]["from"], hist[-1]["author"]["name"]) == ("charging tips?", "alice", "Alice")
    assert hist[1]["event"] == {"type": "join", "user": "bob"}

    (mine,) = (await server.ops.run(bob, "convs", {}))["convs"]
    assert (mine["conv"], mine["role"], mine["read_seq"], mine["unread"]) == (conv, "member", 2, 1)
    assert await server.ops.run(bob, "read", {"conv": conv, "seq": 3}) == {"read_seq": 3, "unread": 0}
    (mine,) = (await server.ops.run(bob, "convs", {}))["convs"]
    assert (mine["read_seq"], mine["unread"]) == (3, 0)
    (owned,) = (await server.ops.run(alice, "convs", {}))["convs"]
    assert (owned["role"], owned["unread"]) == ("owner", 0)  # what one sent counts as read


async def test_refusals_come_back_with_the_protocol_code(server: App) -> None:
    alice, carol = caller("alice"), caller("carol")
    conv = (await server.ops.run(alice, "circle.create", {"name": "n", "category": "city"}))["conv"]
    # not a member
    await refused(server, carol, "history", {"conv": conv}, Err.NOT_MEMBER)
    await refused(server, carol, "send", {"conv": conv, "cid": "x", "text": "hi"}, Err.NOT_MEMBER)
    await refused(server, carol, "circle.leave", {"conv": conv}, Err.NOT_MEMBER)
    # bad arguments
    assert "cid" in await refused(server, alice, "send", {"conv": conv, "text": "no cid"}, Err.BAD_REQUEST)
    await refused(server, alice, "circle.create", {"name": "n", "category": "cars"}, Err.BAD_REQUEST)
    await refused(server, alice, "history", {"conv": conv, "limit": 0}, Err.BAD_REQUEST)
    await refused(server, alice, "history", {"conv": conv, "owner": "bob"}, Err.BAD_REQUEST)
    await refused(server, alice, "no.such.op", {}, Err.UNKNOWN_OP)
    # not allowed
    await refused(server, alice, "circle.create", {"name": "n", "category": "city", "certified": True}, Err.FORBIDDEN)
    await server.ops.run(carol, "circle.join", {"conv": conv})
    await refused(server, carol, "circle.announce", {"conv": conv, "text": "hi all"}, Err.FORBIDDEN)
    await refused(server, carol, "send", {"conv": conv, "cid": "a", "text": "@all", "mention_all": True}, Err.FORBIDDEN)
    await refused(server, alice, "circle.leave", {"conv": conv}, Err.CONFLICT)  # the owner stays
    # no such thing; an op only a socket's session does
    await refused(server, alice, "circle.join", {"conv": "c:999"}, Err.NOT_FOUND)
    await refused(server, alice, "auth", {"token": token("alice")}, Err.ALREADY_AUTHENTICATED)
    # a staff caller may do what an owner may not
    staff = caller("sam", "staff")
    certified = await server.ops.run(staff, "circle.create", {"name": "Official", "category": "city", "certified": True})
    assert certified["certified"] is True


@pytest.mark.parametrize(
    ("op", "d"),
    [
        ("presence.sub", {"users": ["bob"]}),
        ("presence.unsub", {"users": ["bob"]}),
        ("presence.set", {"status": "away"}),
    ],
)
async def test_presence_needs_a_socket(server: App, op: str, d: dict[str, Any]) -> None:
    assert "socket" in await refused(server, caller("alice"), op, d, Err.BAD_REQUEST)


class Untouchable(dict[str, Any]):
    """Arguments that fail the test if anything reads them."""

    def _touched(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("the arguments were looked at")

    __getitem__ = __iter__ = __len__ = __contains__ = get = keys = items = values = _touched


@pytest.mark.parametrize("op", sorted(set(OPS) - {"auth"}))
async def test_a_caller_without_the_ops_scope_is_refused_before_its_arguments_are_read(server: App, op: str) -> None:
    needed = RULES[op].scope
    ident = verify_token(token("mallory"), DEV_SECRET)
    backend = {Scope.ADMIN} if RULES[op].backend else set()  # the admin scope passes a backend op's check
    scopes = frozenset(set(Scope) - {needed, Scope.ANYONE} - backend)
    assert needed not in scopes and scopes
    weak = Caller(ident.id, ident, scopes, ident.author(), CODECS[MSGPACK])
    message = await refused(server, weak, op, Untouchable(), Err.FORBIDDEN)
    assert needed.value in message
    # with the scope, the same garbage is looked at and refused as such
    strong = Caller(ident.id, ident, frozenset({needed}), ident.author(), CODECS[MSGPACK])
    await refused(server, strong, op, {"\x00garbage": object()}, Err.BAD_REQUEST)


def test_every_op_but_auth_needs_a_scope_a_token_gives() -> None:
    # the matrix above only means something if every op asks for a scope
    assert RULES["auth"].scope is Scope.ANYONE
    assert all(RULES[op].scope is not Scope.ANYONE for op in set(OPS) - {"auth"})


async def test_a_socket_user_and_a_socketless_caller_see_each_other(server: App, clients: Any) -> None:
    bob = await clients(server, "bob")
    alice = caller("alice")
    conv = (await server.ops.run(alice, "circle.create", {"name": "Both ways", "category": "interest"}))["conv"]
    await bob.call("circle.join", conv=conv)
    # the caller without a socket sends: the socket gets the push
    ack = await server.ops.run(alice, "send", {"conv": conv, "cid": "a1", "text": "hello from the API"})
    (m,) = await texts(bob, conv, 1)
    assert (m["seq"], m["from"], m["text"]) == (ack["seq"], "alice", "hello from the API")
    assert await server.ops.run(alice, "typing", {"conv": conv}) == {"pushed": True}
    typing = await bob.next_push(kind="typing")
    assert typing.d == {"conv": conv, "user": "alice"}
    # the socket sends: the caller reads it
    sent = await bob.call("send", conv=conv, cid="b1", text="hello from the socket")
    hist = (await server.ops.run(alice, "history", {"conv": conv}))["messages"]
    assert (hist[-1]["seq"], hist[-1]["from"], hist[-1]["text"]) == (sent["seq"], "bob", "hello from the socket")
    # a join by the caller reaches the socket as a system message
    carol = caller("carol")
    await server.ops.run(carol, "circle.join", {"conv": conv})
    join = await bob.next_msg()
    while join["kind"] == "text":  # bob's own message comes first
        join = await bob.next_msg()
    assert join["event"] == {"type": "join", "user": "carol"}
