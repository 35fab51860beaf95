"""One-to-one conversations: canonical id per pair, blocking."""

from __future__ import annotations

from typing import Any


async def test_canonical_conversation_from_both_sides(connect: Any, encoding: str) -> None:
    zed = await connect("zed", encoding=encoding)
    amy = await connect("amy", encoding=encoding)
    a = await zed.call("dm.open", user="amy")
    b = await amy.call("dm.open", user="zed")
    assert a["conv"] == b["conv"] == "dm:amy:zed"
    assert a["kind"] == "dm" and a["members"] == 2 and a["last_seq"] == 0
    assert await zed.call("dm.open", user="amy") == a  # idempotent
    # both see it in their list, with the peer
    for me, peer in ((zed, "amy"), (amy, "zed")):
        (conv,) = (await me.call("convs"))["convs"]
        assert conv["conv"] == "dm:amy:zed" and conv["peer"] == peer and conv["role"] == "member"
        assert conv["unread"] == 0 and conv["read_seq"] == 0


async def test_dm_messages_reach_both_sides(connect: Any) -> None:
    amy = await connect("amy")
    zed = await connect("zed")
    conv = (await amy.call("dm.open", user="zed"))["conv"]
    ack = await amy.call("send", conv=conv, cid="1", text="hi zed")
    for c in (amy, zed):
        msg = await c.next_msg()
        assert (msg["conv"], msg["seq"], msg["text"], msg["from"]) == (conv, ack["seq"], "hi zed", "amy")
    # a third user is no member
    eve = await connect("eve")
    await eve.fail("send", "not_member", conv=conv, cid="x", text="hi")
    await eve.fail("history", "not_member", conv=conv)
    await eve.fail("read", "not_member", conv=conv, seq=1)
    await eve.fail("recall", "not_member", conv=conv, seq=1)
    await zed.no_push()


async def test_dm_with_yourself_is_bad_request(connect: Any) -> None:
    amy = await connect("amy")
    await amy.fail("dm.open", "bad_request", user="amy")
    await amy.fail("block", "bad_request", user="amy")
    await amy.fail("unblock", "bad_request", user="amy")


async def test_dm_bad_input(connect: Any) -> None:
    amy = await connect("amy")
    for bad in ("", "a b", 5, None, ["zed"], "x" * 65):
        await amy.fail("dm.open", "bad_request", user=bad)
    await amy.fail("dm.open", "bad_request")
    await amy.fail("dm.open", "bad_request", user="zed", extra=True)
    await amy.fail("send", "not_member", conv="dm:amy:nobody", cid="1", text="x")


async def test_block_refuses_send_and_open_unblock_restores(connect: Any) -> None:
    amy = await connect("amy")
    zed = await connect("zed")
    conv = (await amy.call("dm.open", user="zed"))["conv"]
    await amy.call("send", conv=conv, cid="before", text="before")
    await zed.next_msg()
    assert await zed.call("block", user="amy") == {}
    await zed.call("block", user="amy")  # idempotent
    # both directions are refused
    await amy.fail("send", "blocked", conv=conv, cid="b1", text="can you hear me")
    await zed.fail("send", "blocked", conv=conv, cid="b2", text="and me")
    await amy.fail("dm.open", "blocked", user="zed")
    await zed.fail("dm.open", "blocked", user="amy")
    await zed.no_push(kind="msg")
    # history stays readable
    hist = await amy.call("history", conv=conv)
    assert [m["text"] for m in hist["messages"]] == ["before"]
    # only the blocker can lift it
    await amy.call("unblock", user="zed")
    await amy.fail("send", "blocked", conv=conv, cid="b3", text="still?")
    await zed.call("unblock", user="amy")
    assert (await amy.call("dm.open", user="zed"))["conv"] == conv
    ack = await amy.call("send", conv=conv, cid="after", text="after")
    assert ack["seq"] == 2  # refused sends took no seq
    assert (await zed.next_msg())["text"] == "after"


async def test_block_before_any_dm(connect: Any) -> None:
    amy = await connect("amy")
    await amy.call("block", user="stalker")
    stalker = await connect("stalker")
    await stalker.fail("dm.open", "blocked", user="amy")
    await amy.fail("dm.open", "blocked", user="stalker")
    assert (await stalker.call("convs"))["convs"] == []


async def test_dm_open_reaches_the_peer_live(connect: Any) -> None:
    """The peer is online when the DM is created: it gets the first message as a push."""
    zed = await connect("zed")
    amy = await connect("amy")
    conv = (await amy.call("dm.open", user="zed"))["conv"]
    await amy.call("send", conv=conv, cid="1", text="first")
    assert (await zed.next_msg())["text"] == "first"


async def test_refusals_do_not_tell_a_third_party_whether_a_dm_exists(connect: Any) -> None:
    """Issue 10, defect 6: history on dm:a:b answered not_member if it existed and
    not_found if not."""
    alice, carol = await connect("alice"), await connect("carol")
    await alice.call("dm.open", user="bob")
    for conv in ("dm:alice:bob", "dm:alice:dave"):  # one exists, one does not
        await carol.fail("history", "not_member", conv=conv)
        await carol.fail("send", "not_member", conv=conv, cid="c", text="hi")
        await carol.fail("typing", "not_member", conv=conv)
        await carol.fail("read", "not_member", conv=conv, seq=1)
        await carol.fail("tip", "not_member", conv=conv, seq=1, amount=1, tid="t")


async def test_no_read_receipt_crosses_a_block(connect: Any) -> None:
    """Issue 10, defect 7."""
    alice, bob = await connect("alice"), await connect("bob")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    seq = (await bob.call("send", conv=conv, cid="1", text="hello"))["seq"]
    await alice.call("read", conv=conv, seq=seq)
    assert (await bob.next_push(5, "read")).d == {"conv": conv, "user": "alice", "seq": seq}
    seq2 = (await bob.call("send", conv=conv, cid="2", text="still there?"))["seq"]
    await bob.call("block", user="alice")
    assert (await alice.call("read", conv=conv, seq=seq2))["read_seq"] == seq2  # her cursor still moves
    await bob.no_push(0.3, "read")
