"""The input path (chatd/edge/session.py): frames are handled as they are parsed, in order.

What a client sees: requests pipelined without waiting take effect in the order
they were sent (a ``send`` right behind ``circle.join`` is accepted); replies may
come back in another order; fragmented and non-UTF-8 frames close with 4200.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chatd_protocol import ErrorReply, Reply
from support import token


async def test_requests_pipelined_behind_auth_run_in_order(server: Any, clients: Any, encoding: str) -> None:
    alice = await clients(server, "alice", encoding=encoding)
    conv = (await alice.call("circle.create", name="pipelined", category="interest"))["conv"]
    bob = await clients(server, None, encoding=encoding)
    # auth, join and send in one burst: nothing waits for a reply
    futs = [
        bob.start("auth", {"token": token("bob", "owner")}),
        bob.start("circle.join", {"conv": conv}),
        bob.start("send", {"conv": conv, "cid": "b1", "text": "right after joining"}),
    ]
    replies = await asyncio.wait_for(asyncio.gather(*futs), 5)
    assert all(isinstance(r, Reply) for r in replies), replies
    ack = replies[2].d
    assert ack["seq"] == 3 and not ack["dup"]  # created, join, then the message
    history = await bob.call("history", conv=conv)
    assert [m.get("text") for m in history["messages"]][-1] == "right after joining"


async def test_send_queued_behind_a_slow_op_keeps_order(server: Any, clients: Any) -> None:
    alice = await clients(server, "alice")
    conv = (await alice.call("circle.create", name="order", category="city"))["conv"]
    # leave is refused for the owner, then a send must still be refused or accepted
    # strictly after it: the replies come back in request order for these ops
    f_members = alice.start("members", {"conv": conv})
    f_send = alice.start("send", {"conv": conv, "cid": "o1", "text": "after members"})
    f_leave = alice.start("circle.leave", {"conv": conv})
    members, ack, leave = await asyncio.wait_for(asyncio.gather(f_members, f_send, f_leave), 5)
    assert isinstance(members, Reply) and [m["user"] for m in members.d["members"]] == ["alice"]
    assert isinstance(ack, Reply) and ack.d["seq"] == 2
    assert isinstance(leave, ErrorReply) and leave.code == "conflict"


async def test_fragmented_message_closes_4200(server: Any, clients: Any) -> None:
    c = await clients(server, "alice")
    await c.ws.send([b"\x81", b"\xa1"])  # an iterable is sent as a fragmented message
    assert await c.closed() == 4200


async def test_text_frame_that_is_not_utf8_closes_4200(server: Any, clients: Any) -> None:
    c = await clients(server, "alice", encoding="json")
    await c.ws.send(b'{"id":1,"op":"ping","d":{"x":"\xff"}}', text=True)
    assert await c.closed() == 4200


async def test_bad_frame_after_accepted_requests_still_answers_them(server: Any, clients: Any) -> None:
    c = await clients(server, "alice")
    conv = (await c.call("circle.create", name="answered", category="city"))["conv"]
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    c.pending[99] = fut
    # both frames leave in the same loop step, so they arrive together
    await c.send_frame({"id": 99, "op": "history", "d": {"conv": conv}})
    await c.send_raw(b"\xc1")  # never valid MessagePack
    reply = await asyncio.wait_for(fut, 5)
    assert isinstance(reply, Reply) and reply.d["messages"][0]["event"]["type"] == "created"
    assert await c.closed() == 4200
