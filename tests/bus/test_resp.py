"""The bus's RESP2 codec: commands packed byte-exact, replies parsed whole or not at all."""

from __future__ import annotations

import pytest

from chatd.bus.resp import _NEED, ProtocolError, RespError, pack, parse


def test_pack_is_an_array_of_bulk_strings() -> None:
    assert pack("PUBLISH", "chatd:c:7", b"\x00\xffx") == b"*3\r\n$7\r\nPUBLISH\r\n$9\r\nchatd:c:7\r\n$3\r\n\x00\xffx\r\n"
    assert pack("SELECT", 3) == b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"
    assert pack("PING") == b"*1\r\n$4\r\nPING\r\n"
    assert pack("X", b"") == b"*2\r\n$1\r\nX\r\n$0\r\n\r\n"


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        (b":0\r\n", 0),
        (b":-12\r\n", -12),
        (b"+OK\r\n", b"OK"),
        (b"$5\r\nhe\r\nl\r\n", b"he\r\nl"),  # binary-safe: CRLF inside a bulk string
        (b"$0\r\n\r\n", b""),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"*0\r\n", []),
        (b"*3\r\n$7\r\nmessage\r\n$3\r\nc:1\r\n$2\r\n\x00\x01\r\n", [b"message", b"c:1", b"\x00\x01"]),
        (b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n", [[1], b"x"]),
    ],
)
def test_parse_values(wire: bytes, value: object) -> None:
    assert parse(wire, 0) == (value, len(wire))
    # every strict prefix is incomplete: nothing is consumed
    for cut in range(len(wire)):
        assert parse(wire[:cut], 0) == (_NEED, 0)


def test_error_reply_is_a_value_not_an_exception() -> None:
    v, end = parse(b"-ERR unknown command\r\n", 0)
    assert isinstance(v, RespError) and str(v) == "ERR unknown command" and end == 22


def test_parse_from_an_offset_and_back_to_back_values() -> None:
    buf = b":1\r\n:2\r\n$1\r\n"
    v, p = parse(buf, 0)
    assert (v, p) == (1, 4)
    v, p = parse(buf, p)
    assert (v, p) == (2, 8)
    assert parse(buf, p) == (_NEED, p)


@pytest.mark.parametrize("wire", [b"?what\r\n", b"\x00\r\n", b"hello\r\n"])
def test_garbage_is_a_protocol_error(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(wire, 0)


@pytest.mark.parametrize("wire", [b":x\r\n", b"$abc\r\n", b"*1.5\r\n"])
def test_bad_lengths_and_numbers_raise(wire: bytes) -> None:
    with pytest.raises(ValueError):
        parse(wire, 0)
