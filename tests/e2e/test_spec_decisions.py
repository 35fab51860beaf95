"""What protocol/README.md decides where client developers found it silent
(issue 10, item 10), checked against the server: lengths in code points, the
WebSocket layer's own close codes, a reply moves the read cursor without a
receipt, an owner's own recall, a sender claiming their red packet, the sign of
debits."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from support import FakeClock, circle, masked, ws_upgrade

from chatd.points import Award


async def test_text_length_is_counted_in_code_points(make_server: Any, clients: Any) -> None:
    app = await make_server(max_text=4000)
    alice = await clients(app, "alice", encoding="json")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    thumbs = "👍🏽"  # 2 code points, 4 UTF-16 units, 1 grapheme cluster
    assert len(thumbs) == 2
    ack = await alice.call("send", conv=conv, cid="max", text=thumbs * 2000)  # 4,000 code points, 8,000 UTF-16 units
    assert ack["seq"] == 1
    await alice.fail("send", "too_long", conv=conv, cid="over", text=thumbs * 2000 + "x")
    await alice.fail("send", "bad_request", conv=conv, cid="empty", text="")


async def ws_close_code(port: int, frames: list[bytes]) -> int:
    """Send raw frames after a handshake; the close code the server answers with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(ws_upgrade())
    await reader.readuntil(b"\r\n\r\n")
    for f in frames:
        writer.write(f)
    data = await asyncio.wait_for(reader.read(256), 5)
    writer.close()
    assert data[0] & 0x0F == 0x8, data  # a close frame
    return int(struct.unpack("!H", data[2:4])[0])


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([masked(0x0, b"abc")], 1002),  # a continuation frame with nothing to continue
        ([bytes((0x81, 3)) + b"abc"], 1002),  # unmasked
        ([masked(0x3, b"x")], 1002),  # reserved opcode
        ([masked(0x8, struct.pack("!H", 999))], 1002),  # invalid close code
        ([masked(0x8, struct.pack("!H", 1000) + b"\xff")], 1007),  # close reason not UTF-8
        ([masked(0x1, b'{"id":1', fin=False), masked(0x0, b"}")], 4200),  # a fragmented message
        ([masked(0x1, b"\xff\xfe")], 4200),  # a text frame that is not UTF-8
        ([masked(0x1, b'{"id":1,"op":"auth","d":{"token":"\\ud800"}}')], 4200),  # a lone surrogate
    ],
)
async def test_the_websocket_layers_own_close_codes(server: Any, frames: list[bytes], code: int) -> None:
    assert await ws_close_code(server.port, frames) == code


async def test_a_reply_moves_the_senders_read_cursor_without_a_receipt(connect: Any) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    first = await bob.call("send", conv=conv, cid="q", text="question")
    reply = await alice.call("send", conv=conv, cid="a", text="answer")
    view = {c["conv"]: c for c in (await alice.call("convs"))["convs"]}[conv]
    assert view["read_seq"] == reply["seq"] > first["seq"] and view["unread"] == 0
    await bob.no_push(0.3, "read")  # no receipt pushed for it
    await alice.call("read", conv=conv, seq=reply["seq"])  # an explicit read of what is read already
    await bob.no_push(0.2, "read")  # the cursor did not move: nothing to push


async def test_an_owner_recalls_their_own_old_message(make_server: Any, clients: Any, fake_clock: FakeClock) -> None:
    app = await make_server(clock=fake_clock, recall_window_s=120)
    alice = await clients(app, "alice")
    conv = await circle(alice)
    ack = await alice.call("send", conv=conv, cid="o", text="the owner's own")
    fake_clock.advance(86400)
    assert (await alice.call("recall", conv=conv, seq=ack["seq"]))["seq"] == ack["seq"] + 1


async def test_a_sender_claims_a_share_of_their_own_red_packet_and_debits_are_negative(
    make_server: Any, clients: Any
) -> None:
    app = await make_server()
    alice, bob = await clients(app, "alice"), await clients(app, "bob")
    conv = await circle(alice, bob)
    await app.pipeline.write(app.store.ledger.apply_awards([Award("alice", "points", 100, "grant", "g:a")], ts=1))
    seq = (await bob.call("send", conv=conv, cid="t", text="tip me"))["seq"]
    await alice.call("tip", conv=conv, seq=seq, amount=10, tid="t1")
    rp = await alice.call("redpacket.send", conv=conv, total=20, shares=2, split="equal", rid="r1")
    assert (await alice.call("redpacket.claim", id=rp["id"]))["amount"] == 10  # the sender's own share
    entries = {e["rule"]: e["amount"] for e in (await alice.call("points.ledger"))["entries"]}
    assert entries["tip"] == -10 and entries["redpacket.hold"] == -20  # debits are negative
    assert entries["redpacket.claim"] == 10 and entries["grant"] == 100  # credits positive
    assert (await alice.call("points.balance"))["points"] == 100 - 10 - 20 + 10
