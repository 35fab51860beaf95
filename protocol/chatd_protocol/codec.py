"""Sans-I/O codecs: bytes in, frames out, and back.

Two codecs carry the same logical frames:

* ``chatd.v1.json``    text frames, UTF-8 JSON (orjson);
* ``chatd.v1.msgpack`` binary frames, MessagePack (strings as str, bytes as bin).

Decoders accept keys in any order; encoders emit them in the order the test
vectors show (``id``, ``op``/``d``/``error``; ``push``, ``d``).
"""

from __future__ import annotations

from typing import Any, Protocol

import msgpack
import orjson

from .errors import Close, Err, FrameError, RequestError
from .frames import ErrorReply, Push, Reply, Request, ServerFrame, valid_request_id

JSON = "chatd.v1.json"
MSGPACK = "chatd.v1.msgpack"
SUBPROTOCOLS = (MSGPACK, JSON)


class Codec(Protocol):
    name: str
    text: bool  # True: frames travel as WebSocket text frames

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes | str) -> Any: ...


class JsonCodec:
    name = JSON
    text = True

    def dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def loads(self, data: bytes | str) -> Any:
        if not isinstance(data, str):
            raise FrameError(Close.WRONG_FRAME_TYPE, "binary frame on chatd.v1.json")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise FrameError(Close.BAD_FRAME, "frame is not valid JSON") from None


class MsgpackCodec:
    """Not thread-safe (one Packer per instance): use it from one thread."""

    name = MSGPACK
    text = False

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)

    def dumps(self, obj: Any) -> bytes:
        data: bytes = self._packer.pack(obj)
        return data

    def loads(self, data: bytes | str) -> Any:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise FrameError(Close.WRONG_FRAME_TYPE, "text frame on chatd.v1.msgpack")
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception:  # msgpack raises a zoo of types on garbage
            raise FrameError(Close.BAD_FRAME, "frame is not valid MessagePack") from None


CODECS: dict[str, Codec] = {JSON: JsonCodec(), MSGPACK: MsgpackCodec()}


def codec_for(subprotocol: str | None) -> Codec:
    codec = CODECS.get(subprotocol or "")
    if codec is None:
        raise FrameError(Close.UNSUPPORTED_SUBPROTOCOL, "no chatd subprotocol")
    return codec


_ENVELOPE = frozenset(("id", "op", "d"))


def decode_request(codec: Codec, data: bytes | str) -> Request:
    """Decode one client frame.

    Raises :class:`FrameError` when the frame can't be answered at all (no valid
    id) and :class:`RequestError` with ``request_id`` set when it can.
    Arguments in ``d`` are not checked here: see :func:`chatd_protocol.ops.check_args`.
    """
    obj = codec.loads(data)
    if not isinstance(obj, dict):
        raise FrameError(Close.BAD_FRAME, "frame is not a map")
    rid = obj.get("id")
    if not valid_request_id(rid):
        raise FrameError(Close.BAD_FRAME, "request without a valid id")
    op = obj.get("op")
    if not isinstance(op, str):
        raise RequestError(Err.BAD_REQUEST, "op must be a string", request_id=rid)
    d = obj.get("d", {})
    if not isinstance(d, dict):
        raise RequestError(Err.BAD_REQUEST, "d must be a map", request_id=rid)
    if not obj.keys() <= _ENVELOPE:
        raise RequestError(Err.BAD_REQUEST, "unknown key in request", request_id=rid)
    return Request(rid, op, d)  # type: ignore[arg-type]


def encode(codec: Codec, frame: Request | ServerFrame) -> bytes:
    return codec.dumps(frame.to_wire())


def decode_server_frame(codec: Codec, data: bytes | str) -> ServerFrame:
    """Decode one server frame (the client's side)."""
    obj = codec.loads(data)
    if not isinstance(obj, dict):
        raise FrameError(Close.BAD_FRAME, "frame is not a map")
    if "push" in obj:
        kind, d = obj["push"], obj.get("d", {})
        if not isinstance(kind, str) or not isinstance(d, dict):
            raise FrameError(Close.BAD_FRAME, "malformed push")
        return Push(kind, d)
    rid = obj.get("id")
    if not valid_request_id(rid):
        raise FrameError(Close.BAD_FRAME, "reply without a valid id")
    if "error" in obj:
        err = obj["error"]
        if not isinstance(err, dict) or not isinstance(err.get("code"), str) or not isinstance(err.get("message"), str):
            raise FrameError(Close.BAD_FRAME, "malformed error reply")
        retry = err.get("retry_after_ms")
        return ErrorReply(
            rid,  # type: ignore[arg-type]
            err["code"],
            err["message"],
            bool(err.get("temporary", False)),
            retry if isinstance(retry, int) else None,
        )
    d = obj.get("d", {})
    if not isinstance(d, dict):
        raise FrameError(Close.BAD_FRAME, "malformed reply")
    return Reply(rid, d)  # type: ignore[arg-type]
