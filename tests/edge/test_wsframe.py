"""Pre-built server frames parse back with websockets' own frame parser."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from chatd.edge import wsframe


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    gen: Generator[None, None, Frame] = Frame.parse(reader.read_exact, mask=False)
    try:
        next(gen)
    except StopIteration as stop:
        frame: Frame = stop.value
    else:  # pragma: no cover - the parser wanted more bytes than the frame has
        raise AssertionError("incomplete frame")
    assert reader.at_eof() is not False or not reader.buffer, "bytes left after the frame"
    assert not reader.buffer
    return frame


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("text", [True, False])
def test_lengths_parse_back(n: int, text: bool) -> None:
    payload = (b"a" if text else b"\x00\xff") * n
    payload = payload[:n]
    data = wsframe.frame(payload, text)
    frame = parse(data)
    assert frame.fin is True
    assert frame.opcode == (Opcode.TEXT if text else Opcode.BINARY)
    assert frame.data == payload
    assert not (frame.rsv1 or frame.rsv2 or frame.rsv3)


@pytest.mark.parametrize(("n", "header"), [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_header_uses_the_shortest_length_encoding(n: int, header: int) -> None:
    data = wsframe.frame(b"x" * n, False)
    assert len(data) == n + header
    assert data[0] == 0x82
    assert data[1] & 0x80 == 0, "server frames are never masked"
