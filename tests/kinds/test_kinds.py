"""What the conversation kinds decide (chatd/kinds/): pure functions of the
cached or transaction-read state, each refusal with the protocol's code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from chatd_protocol import Err, RequestError

from chatd.kinds import Circle, ConversationKind, ConvState, Direct, default_kinds
from chatd.kinds.circle import TYPING_MAX_MEMBERS
from chatd.store.records import ConvRecord, MemberView

KINDS = default_kinds()
DM, CIRCLE = KINDS.dm, KINDS.circle
NOW = 1_763_900_000_000


def state(kind: ConversationKind, members: dict[str, str], muted: dict[str, int] | None = None, blocked: bool = False) -> ConvState:
    return ConvState("x", kind, members, muted or {}, blocked)


def refused(code: Err, fn: Callable[..., Any], *args: Any) -> str:
    with pytest.raises(RequestError) as info:
        fn(*args)
    assert info.value.code == code, info.value.message
    return info.value.message


# -- the registry and ids ------------------------------------------------------


def test_kinds_by_name_and_by_id_prefix() -> None:
    assert isinstance(DM, Direct) and isinstance(CIRCLE, Circle)
    assert KINDS["dm"] is DM and KINDS["circle"] is CIRCLE and KINDS["service"] is KINDS.service
    assert list(KINDS) == [DM, CIRCLE, KINDS.service, KINDS.live]
    assert KINDS.of("l:7.main") is KINDS.of("l:7") is KINDS["live"] is KINDS.live
    assert not KINDS.stored("l:7.main") and KINDS.public("l:7")  # viewers are no member rows; sessions are listed
    assert KINDS.of("dm:alice:bob") is DM
    assert KINDS.of("c:17") is CIRCLE
    assert KINDS.of("s:olivia") is KINDS.service
    assert KINDS.of("x:1") is None
    assert KINDS.of("circle") is None
    with pytest.raises(KeyError):
        KINDS["poll"]


def test_dm_id_is_the_sorted_pair() -> None:
    assert DM.conv_id("bob", "alice") == DM.conv_id("alice", "bob") == "dm:alice:bob"
    assert KINDS.of(DM.conv_id("x", "y")) is DM
    refused(Err.BAD_REQUEST, DM.conv_id, "alice", "alice")


def test_dm_peer_is_the_other_member() -> None:
    conv = DM.conv_id("alice", "bob")
    assert DM.peer(conv, "alice") == "bob"
    assert DM.peer(conv, "bob") == "alice"


# -- send checks (the hot path) ------------------------------------------------


def test_a_member_may_send() -> None:
    CIRCLE.check_send(state(CIRCLE, {"alice": "member"}), "alice", "member", False, NOW)
    DM.check_send(state(DM, {"alice": "member", "bob": "member"}), "alice", "member", False, NOW)


@pytest.mark.parametrize("kind", [DM, CIRCLE])
def test_blocked_refuses_every_send(kind: ConversationKind) -> None:
    s = state(kind, {"alice": "owner", "bob": "member"}, blocked=True)
    refused(Err.BLOCKED, kind.check_send, s, "alice", "owner", False, NOW)


def test_muted_until_later_refuses_and_an_expired_mute_does_not() -> None:
    s = state(CIRCLE, {"alice": "owner", "bob": "member"}, muted={"bob": NOW + 1})
    assert "muted in this circle" in refused(Err.MUTED, CIRCLE.check_send, s, "bob", "member", False, NOW)
    CIRCLE.check_send(s, "bob", "member", False, NOW + 1)  # until is exclusive
    CIRCLE.check_send(s, "alice", "owner", False, NOW)  # only bob is muted


def test_mention_all_is_for_circle_admins() -> None:
    s = state(CIRCLE, {"alice": "owner", "ann": "admin", "bob": "member"})
    CIRCLE.check_send(s, "alice", "owner", True, NOW)
    CIRCLE.check_send(s, "ann", "admin", True, NOW)
    assert "admins may mention everyone" in refused(Err.FORBIDDEN, CIRCLE.check_send, s, "bob", "member", True, NOW)


def test_nobody_administers_a_dm_so_nobody_mentions_all() -> None:
    s = state(DM, {"alice": "member", "bob": "member"})
    refused(Err.FORBIDDEN, DM.check_send, s, "alice", "member", True, NOW)


# -- receipts and typing -----------------------------------------------------


def members(n: int) -> dict[str, str]:
    return {f"u{i}": "member" for i in range(n)}


def test_receipts_up_to_the_configured_size() -> None:
    assert CIRCLE.receipts(state(CIRCLE, members(200)), 200)
    assert not CIRCLE.receipts(state(CIRCLE, members(201)), 200)
    assert DM.receipts(state(DM, members(2)), 200)
    assert not DM.receipts(state(DM, members(2)), 1)


def test_typing_in_circles_up_to_the_size_limit() -> None:
    assert CIRCLE.check_typing(state(CIRCLE, members(TYPING_MAX_MEMBERS)))
    assert not CIRCLE.check_typing(state(CIRCLE, members(TYPING_MAX_MEMBERS + 1)))


def test_typing_in_a_dm_unless_blocked() -> None:
    assert DM.check_typing(state(DM, members(2)))
    refused(Err.BLOCKED, DM.check_typing, state(DM, members(2), blocked=True))


# -- decisions inside a write's transaction --------------------------------------


def test_require_checks_the_stored_kind() -> None:
    CIRCLE.require("c:1", "circle")
    assert refused(Err.NOT_FOUND, CIRCLE.require, "c:1", "") == "no circle c:1"  # does not exist
    refused(Err.NOT_FOUND, CIRCLE.require, "dm:a:b", "dm")  # exists, other kind
    refused(Err.NOT_FOUND, DM.require, "c:1", "circle")


def test_check_admin() -> None:
    for role in ("owner", "admin"):
        CIRCLE.check_admin("c:1", "circle", role, None)
    refused(Err.NOT_FOUND, CIRCLE.check_admin, "c:1", "dm", "owner", None)
    refused(Err.NOT_MEMBER, CIRCLE.check_admin, "c:1", "circle", None, None)
    assert "owner and admins" in refused(Err.FORBIDDEN, CIRCLE.check_admin, "c:1", "circle", "member", None)
    refused(Err.FORBIDDEN, DM.check_admin, "dm:a:b", "dm", "member", None)


def test_check_role_change() -> None:
    CIRCLE.check_role_change("c:1", "bob", "circle", "owner", "member")
    CIRCLE.check_role_change("c:1", "bob", "circle", "admin", "admin")
    refused(Err.FORBIDDEN, CIRCLE.check_role_change, "c:1", "bob", "circle", "member", "member")
    assert "bob is not a member" in refused(Err.NOT_MEMBER, CIRCLE.check_role_change, "c:1", "bob", "circle", "owner", None)
    refused(Err.FORBIDDEN, CIRCLE.check_role_change, "c:1", "alice", "circle", "admin", "owner")
    refused(Err.NOT_MEMBER, CIRCLE.check_role_change, "c:1", "bob", "circle", None, "member")


def test_check_mute() -> None:
    CIRCLE.check_mute("c:1", "bob", "circle", "admin", "member")
    assert refused(Err.FORBIDDEN, CIRCLE.check_mute, "c:1", "ann", "circle", "owner", "admin") == "admins cannot be muted"
    refused(Err.FORBIDDEN, CIRCLE.check_mute, "c:1", "alice", "circle", "admin", "owner")
    refused(Err.NOT_MEMBER, CIRCLE.check_mute, "c:1", "bob", "circle", "owner", None)
    refused(Err.FORBIDDEN, CIRCLE.check_mute, "c:1", "bob", "circle", "member", "member")


def test_check_leave() -> None:
    CIRCLE.check_leave("c:1", "circle", "member")
    CIRCLE.check_leave("c:1", "circle", "admin")
    assert refused(Err.CONFLICT, CIRCLE.check_leave, "c:1", "circle", "owner") == "the owner cannot leave the circle"
    refused(Err.NOT_MEMBER, CIRCLE.check_leave, "c:1", "circle", None)
    refused(Err.NOT_FOUND, CIRCLE.check_leave, "c:1", "", None)


WINDOW = 120_000


def test_senders_recall_their_own_within_the_window() -> None:
    CIRCLE.check_recall(WINDOW, "circle", "member", True, 0)
    CIRCLE.check_recall(WINDOW, "circle", "member", True, WINDOW)
    refused(Err.RECALL_WINDOW, CIRCLE.check_recall, WINDOW, "circle", "member", True, WINDOW + 1)
    refused(Err.FORBIDDEN, CIRCLE.check_recall, WINDOW, "circle", "member", False, 0)


def test_circle_admins_recall_any_message_at_any_time() -> None:
    for role in ("owner", "admin"):
        CIRCLE.check_recall(WINDOW, "circle", role, False, 10 * WINDOW)
        CIRCLE.check_recall(WINDOW, "circle", role, True, 10 * WINDOW)


def test_in_a_dm_only_the_sender_recalls() -> None:
    DM.check_recall(WINDOW, "dm", "member", True, 1)
    assert refused(Err.FORBIDDEN, DM.check_recall, WINDOW, "dm", "member", False, 1) == "only the sender may recall"
    refused(Err.RECALL_WINDOW, DM.check_recall, WINDOW, "dm", "member", True, WINDOW + 1)


# -- wire forms --------------------------------------------------------------


def test_circle_wire_form() -> None:
    rec = ConvRecord(
        "c:3", "circle", "ES8 Berlin", 4, 9, "alice",
        {"category": "city", "description": "d", "announcement": "a", "certified": 1},
    )  # fmt: skip
    assert CIRCLE.wire(rec) == {
        "conv": "c:3", "kind": "circle", "name": "ES8 Berlin", "members": 4, "last_seq": 9,
        "category": "city", "certified": True, "description": "d", "announcement": "a", "owner": "alice",
    }  # fmt: skip
    bare = CIRCLE.wire(ConvRecord("c:4", "circle", "n", 1, 1, "bob"))
    assert (bare["category"], bare["certified"], bare["description"], bare["announcement"]) == (None, False, "", "")


def test_member_wire_adds_the_members_own_cursor() -> None:
    rec = ConvRecord("c:3", "circle", "n", 2, 10, "alice", {"category": "city"})
    out = CIRCLE.member_wire(MemberView(rec, "admin", 7, 0), "bob")
    assert out == {**CIRCLE.wire(rec), "role": "admin", "read_seq": 7, "unread": 3, "muted_until": 0}


def test_dm_wire_form_names_the_peer_for_each_member() -> None:
    rec = ConvRecord("dm:alice:bob", "dm", "", 2, 5)
    assert DM.wire(rec) == {"conv": "dm:alice:bob", "kind": "dm", "name": "", "members": 2, "last_seq": 5}
    for me, peer in (("alice", "bob"), ("bob", "alice")):
        out = DM.member_wire(MemberView(rec, "member", 5, 0), me)
        assert out["peer"] == peer and out["unread"] == 0 and "category" not in out
