"""check_args: the one argument checker both server and client use."""

from __future__ import annotations

from typing import Any

import pytest
from chatd_protocol import OPS, Err, RequestError, check_args
from chatd_protocol.ops import CATEGORIES, MAX_SEQ


def refused(op: str, d: Any, code: Err = Err.BAD_REQUEST) -> str:
    with pytest.raises(RequestError) as info:
        check_args(op, d)
    assert info.value.code == code
    return info.value.message


def test_unknown_op() -> None:
    refused("fly", {}, Err.UNKNOWN_OP)
    refused("", {}, Err.UNKNOWN_OP)
    refused("PING", {}, Err.UNKNOWN_OP)
    # the message never echoes an unbounded op name
    assert len(refused("x" * 10_000, {}, Err.UNKNOWN_OP)) < 200


@pytest.mark.parametrize("d", [[], "x", None, 1, [("a", 1)]])
def test_d_not_a_map(d: Any) -> None:
    refused("ping", d)


def test_unknown_fields_are_refused_everywhere() -> None:
    for op in OPS:
        assert "unknown field" in refused(op, {"zzz": 1})
    refused("ping", {1: 1})
    # a typo of a real field
    refused("send", {"conv": "c:1", "cid": "a", "text": "x", "mention": ["bob"]})


def test_required_fields() -> None:
    refused("send", {"conv": "c:1", "cid": "a"})
    refused("send", {"conv": "c:1", "text": "x"})
    refused("auth", {})
    refused("read", {"conv": "c:1"})
    refused("circle.create", {"name": "x"})
    check_args("ping", {})
    check_args("circle.list", {})
    check_args("convs", {})


@pytest.mark.parametrize("value", [True, False])
def test_bools_are_not_ints(value: bool) -> None:
    refused("read", {"conv": "c:1", "seq": value})
    refused("history", {"conv": "c:1", "limit": value})
    refused("sync", {"since": value})
    refused("circle.mute", {"conv": "c:1", "user": "bob", "seconds": value})


@pytest.mark.parametrize("value", [0, 1, "true", None, [], 1.0])
def test_ints_are_not_bools(value: Any) -> None:
    refused("send", {"conv": "c:1", "cid": "a", "text": "x", "mention_all": value})
    refused("circle.create", {"name": "x", "category": "city", "certified": value})


@pytest.mark.parametrize("value", [1.0, 1.5, "1", None, [1]])
def test_ints_must_be_ints(value: Any) -> None:
    refused("read", {"conv": "c:1", "seq": value})
    refused("sync", {"since": value})


def test_int_ranges() -> None:
    check_args("read", {"conv": "c:1", "seq": 0})
    check_args("read", {"conv": "c:1", "seq": MAX_SEQ})
    refused("read", {"conv": "c:1", "seq": -1})
    refused("read", {"conv": "c:1", "seq": MAX_SEQ + 1})
    refused("read", {"conv": "c:1", "seq": 2**64})
    refused("recall", {"conv": "c:1", "seq": 0})
    refused("history", {"conv": "c:1", "before": 0})
    for op, field, lo, hi, extra in [
        ("history", "limit", 1, 100, {"conv": "c:1"}),
        ("circle.list", "limit", 1, 100, {}),
        ("members", "limit", 1, 200, {"conv": "c:1"}),
        ("sync", "limit", 1, 1000, {"since": 0}),
        ("convs", "limit", 1, 200, {}),
        ("circle.mute", "seconds", 0, 30 * 86400, {"conv": "c:1", "user": "bob"}),
    ]:
        check_args(op, {**extra, field: lo})
        check_args(op, {**extra, field: hi})
        refused(op, {**extra, field: lo - 1})
        refused(op, {**extra, field: hi + 1})


def test_string_lengths() -> None:
    check_args("circle.create", {"name": "x" * 64, "category": "city", "description": "d" * 500})
    refused("circle.create", {"name": "", "category": "city"})
    refused("circle.create", {"name": "x" * 65, "category": "city"})
    refused("circle.create", {"name": "x", "category": "city", "description": "d" * 501})
    check_args("circle.announce", {"conv": "c:1", "text": ""})
    refused("circle.announce", {"conv": "c:1", "text": "t" * 2001})
    refused("send", {"conv": "c:1", "cid": "", "text": "x"})
    refused("send", {"conv": "c:1", "cid": "c" * 65, "text": "x"})
    refused("send", {"conv": "c:1", "cid": "a", "text": ""})
    refused("send", {"conv": "c:1", "cid": "a", "text": "t" * 65537})
    refused("auth", {"token": ""})
    refused("auth", {"token": "t" * 8193})
    refused("auth", {"token": 5})


@pytest.mark.parametrize(
    "user", ["", "a b", "a/b", "x" * 65, "ü", "a\nb", 5, None, "bob\n"]
)
def test_user_ids(user: Any) -> None:
    refused("dm.open", {"user": user})
    refused("block", {"user": user})
    refused("send", {"conv": "c:1", "cid": "a", "text": "x", "mentions": [user]})


@pytest.mark.parametrize("user", ["a", "A.b-c_d@e", "x" * 64])
def test_valid_user_ids(user: str) -> None:
    check_args("dm.open", {"user": user})


@pytest.mark.parametrize(
    "conv", ["", "c 1", "c/1", "x" * 141, 1, None, ["c:1"], "c:1\n"]
)
def test_conv_ids(conv: Any) -> None:
    refused("history", {"conv": conv})
    refused("circle.list", {"after": conv})


def test_enums() -> None:
    for category in CATEGORIES:
        check_args("circle.create", {"name": "x", "category": category})
    for bad in ("cars", "CITY", "", 1, None):
        refused("circle.create", {"name": "x", "category": bad})
        refused("circle.list", {"category": bad})
    refused("circle.role", {"conv": "c:1", "user": "bob", "role": "owner"})


def test_mentions_list() -> None:
    base = {"conv": "c:1", "cid": "a", "text": "x"}
    check_args("send", {**base, "mentions": []})
    check_args("send", {**base, "mentions": [f"u{i}" for i in range(50)]})
    refused("send", {**base, "mentions": [f"u{i}" for i in range(51)]})
    refused("send", {**base, "mentions": "bob"})
    refused("send", {**base, "mentions": {"bob": 1}})
    refused("send", {**base, "mentions": [["bob"]]})
