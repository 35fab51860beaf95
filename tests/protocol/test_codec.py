"""Edge cases of the sans-I/O codecs and frame decoders."""

from __future__ import annotations

import msgpack
import orjson
import pytest
from chatd_protocol import (
    CODECS,
    JSON,
    MSGPACK,
    Close,
    Err,
    ErrorReply,
    FrameError,
    Push,
    Reply,
    Request,
    RequestError,
    close_action,
    codec_for,
    decode_request,
    decode_server_frame,
    encode,
)
from chatd_protocol.frames import MAX_ID, valid_request_id

J = CODECS[JSON]
M = CODECS[MSGPACK]


def mp(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def js(obj: object) -> str:
    return orjson.dumps(obj).decode()


def frame_error(codec: object, data: bytes | str) -> Close:
    with pytest.raises(FrameError) as info:
        decode_request(codec, data)  # type: ignore[arg-type]
    return info.value.code


def request_error(codec: object, data: bytes | str) -> RequestError:
    with pytest.raises(RequestError) as info:
        decode_request(codec, data)  # type: ignore[arg-type]
    return info.value


def test_codec_for_picks_by_subprotocol() -> None:
    assert codec_for(MSGPACK) is M
    assert codec_for(JSON) is J
    assert M.text is False and J.text is True
    for bad in (None, "", "chatd.v2.json", "json"):
        with pytest.raises(FrameError) as info:
            codec_for(bad)
        assert info.value.code == Close.UNSUPPORTED_SUBPROTOCOL


def test_wrong_frame_type_for_codec() -> None:
    assert frame_error(J, mp({"id": 1, "op": "ping"})) == Close.WRONG_FRAME_TYPE
    assert frame_error(M, js({"id": 1, "op": "ping"})) == Close.WRONG_FRAME_TYPE


@pytest.mark.parametrize(
    "data",
    ["", "{", "nul", '{"id":1,"op":"ping"', "\ufeff{}", '{"id":1}{"id":2}', "NaN"],
)
def test_json_garbage_is_bad_frame(data: str) -> None:
    assert frame_error(J, data) == Close.BAD_FRAME


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x81", b"\xdc\xff", b"\xa5ab"])
def test_msgpack_garbage_is_bad_frame(data: bytes) -> None:
    assert frame_error(M, data) == Close.BAD_FRAME


def test_msgpack_trailing_bytes_are_refused() -> None:
    assert frame_error(M, mp({"id": 1, "op": "ping"}) + b"\x01") == Close.BAD_FRAME


def test_msgpack_non_string_map_keys_are_refused() -> None:
    assert frame_error(M, mp({1: 1, "id": 1, "op": "ping"})) == Close.BAD_FRAME


@pytest.mark.parametrize("obj", [[1, 2], 42, "str", None, True, 1.5])
@pytest.mark.parametrize("codec", [J, M], ids=["json", "msgpack"])
def test_not_a_map_is_bad_frame(codec: object, obj: object) -> None:
    data = js(obj) if codec is J else mp(obj)
    assert frame_error(codec, data) == Close.BAD_FRAME


@pytest.mark.parametrize(
    "rid", [None, -1, MAX_ID + 1, True, False, 1.0, "", "x" * 65, [1], {"a": 1}]
)
@pytest.mark.parametrize("codec", [J, M], ids=["json", "msgpack"])
def test_invalid_request_ids_close(codec: object, rid: object) -> None:
    frame = {"op": "ping"} if rid is None else {"id": rid, "op": "ping"}
    data = js(frame) if codec is J else mp(frame)
    assert frame_error(codec, data) == Close.BAD_FRAME


@pytest.mark.parametrize("rid", [0, 1, MAX_ID, "a", "x" * 64, "日本"])
def test_valid_request_ids_echo(rid: object) -> None:
    assert valid_request_id(rid)
    for codec in (J, M):
        data = js({"id": rid, "op": "ping"}) if codec is J else mp({"id": rid, "op": "ping"})
        req = decode_request(codec, data)
        assert req == Request(rid, "ping", {})  # type: ignore[arg-type]


def test_msgpack_bin_id_is_not_a_string() -> None:
    assert frame_error(M, mp({"id": b"abc", "op": "ping"})) == Close.BAD_FRAME


def test_keys_in_any_order() -> None:
    a = decode_request(J, '{"d":{},"op":"ping","id":3}')
    b = decode_request(M, mp({"d": {}, "op": "ping", "id": 3}))
    assert a == b == Request(3, "ping", {})


@pytest.mark.parametrize(
    "frame",
    [
        {"id": 7, "op": 5},
        {"id": 7, "op": None},
        {"id": 7},
        {"id": 7, "op": "ping", "d": [1]},
        {"id": 7, "op": "ping", "d": "x"},
        {"id": 7, "op": "ping", "d": None},
        {"id": 7, "op": "ping", "d": {}, "x": 1},
        {"id": 7, "op": "ping", "extra": 1},
    ],
)
def test_answerable_bad_requests_keep_their_id(frame: dict[str, object]) -> None:
    for codec, data in ((J, js(frame)), (M, mp(frame))):
        err = request_error(codec, data)
        assert err.code == Err.BAD_REQUEST
        assert err.request_id == 7
        assert not err.temporary


def test_encode_matches_wire_order() -> None:
    assert encode(J, Request(1, "ping")) == b'{"id":1,"op":"ping","d":{}}'
    assert encode(J, Reply("a", {"x": 1})) == b'{"id":"a","d":{"x":1}}'
    assert encode(J, Push("read", {})) == b'{"push":"read","d":{}}'
    assert (
        encode(J, ErrorReply(1, "bad_request", "m"))
        == b'{"id":1,"error":{"code":"bad_request","message":"m","temporary":false}}'
    )
    assert b"retry_after_ms" not in encode(M, ErrorReply(1, "bad_request", "m"))


def test_unicode_roundtrip_both_codecs() -> None:
    frame = Request(1, "send", {"conv": "c:1", "cid": "x", "text": "你好 👋 \u0000 \u2028"})
    for codec in (J, M):
        data = encode(codec, frame)
        if codec is J:
            data = data.decode()  # type: ignore[assignment]
        assert decode_request(codec, data) == frame


def test_lone_surrogate_cannot_be_encoded_as_json() -> None:
    with pytest.raises(orjson.JSONEncodeError):
        encode(J, Request(1, "send", {"text": "\ud800"}))


def test_decode_server_frames() -> None:
    assert decode_server_frame(J, '{"push":"msg","d":{"a":1}}') == Push("msg", {"a": 1})
    assert decode_server_frame(J, '{"id":1,"d":{}}') == Reply(1, {})
    err = decode_server_frame(
        J, '{"id":1,"error":{"code":"rate_limited","message":"m","temporary":true,"retry_after_ms":5}}'
    )
    assert err == ErrorReply(1, "rate_limited", "m", True, 5)
    for bad in (
        "[]",
        '{"push":1,"d":{}}',
        '{"push":"msg","d":[]}',
        '{"d":{}}',
        '{"id":1,"error":"x"}',
        '{"id":1,"error":{"code":1,"message":"m"}}',
        '{"id":1,"error":{"code":"x"}}',
        '{"id":1,"d":5}',
    ):
        with pytest.raises(FrameError):
            decode_server_frame(J, bad)


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (4000, "reconnect"),
        (4001, "reconnect"),
        (4099, "reconnect"),
        (1011, "reconnect"),
        (1006, "reconnect"),
        (4100, "reauth"),
        (4102, "reauth"),
        (4199, "reauth"),
        (4200, "stop"),
        (4203, "stop"),
        (4299, "stop"),
        (1009, "stop"),
    ],
)
def test_close_action_by_range(code: int, action: str) -> None:
    assert close_action(code) == action


def test_temporary_error_codes() -> None:
    temporary = {e for e in Err if RequestError(e, "m").temporary}
    assert temporary == {Err.RATE_LIMITED, Err.UNAVAILABLE, Err.INTERNAL}
