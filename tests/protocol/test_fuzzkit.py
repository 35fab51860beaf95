"""The fuzzer's own ground (tests/fuzzkit.py), without a server: the codes it holds
the server to are the ones protocol/README.md documents, every op of the op table
is generated both right and wrong, and what it says of each frame is what the
reference codec and ``check_args`` make of it. So a failure of the fuzz test
against a server (tests/e2e/test_fuzz.py) is the server's."""

from __future__ import annotations

import random
from typing import Any

import fuzzkit as fk
import pytest
from chatd_protocol import CODECS, OPS, Close, Err, FrameError, RequestError, check_args, decode_request
from hypothesis import given, settings
from hypothesis import strategies as st

WORLD = fk.World(
    user="fuzz",
    tokens={t: f"token-{t}" for t in fk.USER_TYPES},
    other_token="token-other",
    control_token="token-ctl",
    users=["fuzz", "peer1", "nobody"],
    convs=["c:1", "c:2", "dm:fuzz:peer1", "c:999999"],
    max_frame=65536,
    max_text=4000,
)


def test_the_spec_documents_every_code_the_protocol_package_has() -> None:
    spec = fk.load_spec()
    assert set(spec.errors) == {e.value for e in Err}, "§7 and chatd_protocol.Err differ"
    assert {int(c) for c in Close} <= spec.closes, "a close code of chatd_protocol.Close is not in §8"
    assert spec.errors["rate_limited"] and not spec.errors["bad_request"]
    assert {1002, 1007, 1009, 4200} <= spec.closes
    assert set(OPS) <= set(spec.op_errors), f"ops without a row in §5: {sorted(set(OPS) - set(spec.op_errors))}"
    assert {"msg", "presence", "resync"} <= spec.pushes


def test_every_op_of_the_table_is_generated_right_and_wrong() -> None:
    src = fk.RandomSource(random.Random(19))
    seen: set[tuple[str, bool]] = set()
    for _ in range(6000):
        codec = fk.pick(src, fk.CODEC_NAMES)
        p = fk.gen_request(src, WORLD, codec, fk.Ids())
        if p.kind == "request" and p.op in OPS:
            seen.add((p.op, p.args_ok))
    missing = {(op, ok) for op in OPS for ok in (True, False)} - seen
    assert not missing, f"never generated: {sorted(missing)}"


def _decode(codec: str, p: fk.Planned) -> Any:
    """What the server's session does with the frame's bytes, up to the op table:
    FrameError (a close), RequestError (an error reply) or the request."""
    data = p.data
    if isinstance(data, bytes) and p.text:
        data = data.decode()  # UnicodeDecodeError: the session closes 4200
    elif isinstance(data, str) and not p.text:
        data = data.encode()
    if p.text is not CODECS[codec].text:
        raise FrameError(Close.WRONG_FRAME_TYPE, "wrong frame type")
    req = decode_request(CODECS[codec], data)
    check_args(req.op, req.d)
    return req


def _refusal(codec: str, p: fk.Planned) -> Any:
    try:
        return _decode(codec, p)
    except UnicodeDecodeError:
        return FrameError(Close.BAD_FRAME, "not UTF-8")
    except (FrameError, RequestError) as exc:
        return exc


def check_labels(codec: str, p: fk.Planned) -> None:
    exp = fk.expect(p)
    got = _refusal(codec, p)
    if p.kind == "closer" and p.close == {1009}:
        assert p.nbytes > WORLD.max_frame
        return
    assert p.nbytes <= WORLD.max_frame, p
    if isinstance(got, FrameError):
        assert got.code in exp.close, (p, got.code, got.reason)
        return
    assert exp.reply, (p, got)
    if exp.codes == frozenset({"forbidden"}):
        return  # an op the fuzzed token lacks the scope of: the server's refusal, before the codec's checks
    if isinstance(got, RequestError):
        assert got.code.value in (exp.codes or ()), (p, got.code, got.message)
        assert got.request_id in (None, p.rid), (p, got.request_id)
        return
    assert exp.ok or p.op == "auth", (p, "the reference codec and op table accept it")
    assert (got.id, got.op) == (p.rid, p.op)


@pytest.mark.parametrize("codec", fk.CODEC_NAMES)
@settings(fk.SETTINGS, max_examples=150)
@given(data=st.data())
def test_what_the_fuzzer_says_of_a_frame_is_what_the_reference_codec_does(codec: str, data: st.DataObject) -> None:
    case = data.draw(fk.cases(WORLD, codec))
    for p in case.frames:
        check_labels(codec, p)


@pytest.mark.parametrize("codec", fk.CODEC_NAMES)
@settings(fk.SETTINGS, max_examples=100)
@given(data=st.data())
def test_first_frames_are_labelled_like_the_reference_codec_does(codec: str, data: st.DataObject) -> None:
    p = data.draw(fk.first_frames(WORLD, codec))
    got = _refusal(codec, p)
    exp = fk.expect(p, first=True)
    if p.nbytes > WORLD.max_frame:
        assert exp.close == {1009}, p
    elif isinstance(got, FrameError):
        assert got.code in exp.close or (got.code == Close.BAD_FRAME and 4200 in exp.close), (p, got)
    elif isinstance(got, RequestError) and p.kind != "request":
        assert 4200 in exp.close, (p, got)  # a malformed first request closes
    elif p.op == "auth":
        assert exp.close == {4101} or exp.ok, (p, got)
    else:
        assert exp.close <= {4103, 4200, 1009}, (p, exp)


def test_the_random_source_is_reproducible() -> None:
    a = [fk.gen_case(fk.RandomSource(random.Random(5)), WORLD) for _ in range(3)]
    b = [fk.gen_case(fk.RandomSource(random.Random(5)), WORLD) for _ in range(3)]
    assert a == b
