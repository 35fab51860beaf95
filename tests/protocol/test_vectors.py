"""protocol/vectors/frames.json against the reference codec and a real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
import pytest
from chatd_protocol import CODECS, JSON, MSGPACK, ErrorReply, Push, Reply, Request, decode_request, decode_server_frame
from chatd_protocol.codec import encode
from support import ROOT

VECTORS: list[dict[str, Any]] = json.loads((ROOT / "protocol" / "vectors" / "frames.json").read_text())
VALID = [c for c in VECTORS if "frame" in c and "json" in c and "msgpack" in c]
CLOSES = [c for c in VECTORS if "close" in c]
ERRORS = [c for c in VECTORS if "error" in c and "frame" in c and "json" not in c]


def ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


def test_every_vector_is_classified() -> None:
    assert len(VALID) + len(CLOSES) + len(ERRORS) == len(VECTORS)
    assert VALID and CLOSES and ERRORS
    assert len(set(ids(VECTORS))) == len(VECTORS), "vector names are unique"


def as_frame(frame: dict[str, Any]) -> Request | Reply | ErrorReply | Push:
    if "op" in frame:
        return Request(frame["id"], frame["op"], frame["d"])
    if "push" in frame:
        return Push(frame["push"], frame["d"])
    if "error" in frame:
        e = frame["error"]
        return ErrorReply(frame["id"], e["code"], e["message"], e["temporary"], e.get("retry_after_ms"))
    return Reply(frame["id"], frame["d"])


@pytest.mark.parametrize("case", VALID, ids=ids(VALID))
def test_valid_vector_decodes_to_frame(case: dict[str, Any]) -> None:
    raw_msgpack = bytes.fromhex(case["msgpack"])
    assert CODECS[JSON].loads(case["json"]) == case["frame"]
    assert CODECS[MSGPACK].loads(raw_msgpack) == case["frame"]
    # and through the frame decoders of each side
    expected = as_frame(case["frame"])
    for codec, data in ((CODECS[JSON], case["json"]), (CODECS[MSGPACK], raw_msgpack)):
        got = decode_request(codec, data) if isinstance(expected, Request) else decode_server_frame(codec, data)
        assert got == expected


@pytest.mark.parametrize("case", VALID, ids=ids(VALID))
def test_valid_vector_encodes_to_exact_bytes(case: dict[str, Any]) -> None:
    frame = as_frame(case["frame"])
    assert encode(CODECS[JSON], frame) == case["json"].encode()
    assert encode(CODECS[MSGPACK], frame) == bytes.fromhex(case["msgpack"])
    assert CODECS[JSON].dumps(case["frame"]) == case["json"].encode()
    assert CODECS[MSGPACK].dumps(case["frame"]) == bytes.fromhex(case["msgpack"])


def _no_bytes(obj: Any) -> bool:
    if isinstance(obj, bytes):
        return False
    if isinstance(obj, dict):
        return all(_no_bytes(k) and _no_bytes(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_no_bytes(v) for v in obj)
    return True


def test_msgpack_vectors_hold_strings_as_str_never_bin() -> None:
    for case in VALID:
        obj = msgpack.unpackb(bytes.fromhex(case["msgpack"]), raw=False)
        assert _no_bytes(obj), case["name"]


@pytest.mark.parametrize("case", CLOSES, ids=ids(CLOSES))
async def test_server_closes_on_bad_frame_after_auth(case: dict[str, Any], connect: Any) -> None:
    if "json" in case:
        c = await connect("alice", encoding="json")
        await c.send_raw(case["json"])
    else:
        c = await connect("alice", encoding="msgpack")
        await c.send_raw(bytes.fromhex(case["msgpack_hex"]))
    assert await c.closed() == case["close"]


@pytest.mark.parametrize("case", CLOSES, ids=ids(CLOSES))
async def test_server_closes_on_bad_frame_before_auth(case: dict[str, Any], connect: Any) -> None:
    if "json" in case:
        c = await connect(None, encoding="json")
        await c.send_raw(case["json"])
    else:
        c = await connect(None, encoding="msgpack")
        await c.send_raw(bytes.fromhex(case["msgpack_hex"]))
    assert await c.closed() == case["close"]


@pytest.mark.parametrize("case", ERRORS, ids=ids(ERRORS))
async def test_server_refuses_request_with_error(case: dict[str, Any], connect: Any, encoding: str) -> None:
    c = await connect("alice", encoding=encoding)
    fut = c.pending[case["frame"]["id"]] = asyncio.get_running_loop().create_future()
    await c.send_frame(case["frame"])
    reply = await asyncio.wait_for(fut, 5)
    assert isinstance(reply, ErrorReply), reply
    assert reply.code == case["error"]
    assert reply.temporary is False
    # the socket stays open and usable
    assert "server_time" in await c.call("ping")
