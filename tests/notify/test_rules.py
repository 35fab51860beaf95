"""The notification rules: targets, skips, quiet hours, coalescing (pure logic)."""

from __future__ import annotations

from chatd.notify.rules import MENTION, MENTION_ALL, MESSAGE, PREVIEW_MAX, Planner, preview, quiet, targets
from chatd.store.records import NotifyContext, NotifyPrefs, NotifySource, NotifyState

MIN = 60_000
DAY = 1440 * MIN
T0 = 20_000 * DAY  # a UTC midnight


def src(seq: int, sender: str = "alice", text: str = "hi", mentions: tuple[str, ...] = (), all_: bool = False,
        conv: str = "c:1") -> NotifySource:
    return NotifySource(seq, conv, "circle", seq, sender, sender.title(), T0, text, mentions, all_)


def test_targets_by_kind_and_mentions() -> None:
    members = {"alice": 0, "bob": 0, "carol": 0}
    assert targets(src(1), None, members) == {"bob": MESSAGE, "carol": MESSAGE}
    assert targets(src(1), (), members) == {}
    assert targets(src(1), ("carol", "zed"), members) == {"carol": MESSAGE}  # a service group's owner; zed left
    assert targets(src(1, mentions=("bob", "zed", "alice")), (), members) == {"bob": MENTION}
    assert targets(src(1, all_=True, mentions=("carol",)), (), members) == {"bob": MENTION_ALL, "carol": MENTION}


def test_quiet_hours_wrap_midnight_in_local_time() -> None:
    night = NotifyPrefs(quiet_from=22 * 60, quiet_to=7 * 60, utc_offset=8 * 60)  # 22:00-07:00 at UTC+8
    assert quiet(night, T0 + 15 * 60 * MIN)  # 15:00 UTC = 23:00 local
    assert quiet(night, T0 + 22 * 60 * MIN + 59 * MIN)  # 06:59 local
    assert not quiet(night, T0 + 23 * 60 * MIN)  # 07:00 local: over
    assert not quiet(night, T0 + 6 * 60 * MIN)  # 14:00 local
    day = NotifyPrefs(quiet_from=9 * 60, quiet_to=17 * 60, utc_offset=-300)  # 09:00-17:00 at UTC-5
    assert quiet(day, T0 + 14 * 60 * MIN)  # 09:00 local
    assert not quiet(day, T0 + 22 * 60 * MIN)  # 17:00 local
    assert not quiet(NotifyPrefs(), T0)


def test_skips_online_muted_read_blocked() -> None:
    ctx = NotifyContext(
        prefs={"m": NotifyPrefs(muted_until=T0 + MIN)},
        conv_mutes={("cm", "c:1"): T0 + MIN, ("other", "c:2"): T0 + MIN},
        blocked={("b", "alice")},
    )
    members = {u: 0 for u in ("alice", "on", "m", "cm", "r", "b", "other", "ok")}
    members["r"] = 5
    p = Planner(ctx, {"on"}, T0, MIN)
    p.message(src(5, mentions=tuple(members)), (), members)
    assert sorted(n.user for n in p.notes) == ["ok", "other"]
    assert p.outcomes == {"online": 1, "muted": 2, "read": 1, "blocked": 1, "emitted": 2}
    # a mute that ended binds nothing
    p = Planner(ctx, set(), T0 + MIN, MIN)
    p.message(src(6, mentions=("m", "cm")), (), {"m": 0, "cm": 0})
    assert sorted(n.user for n in p.notes) == ["cm", "m"]


def test_coalescing_one_per_interval_then_the_rest_as_one() -> None:
    ctx = NotifyContext()
    members = {"alice": 0, "bob": 0}
    p = Planner(ctx, set(), T0, MIN)
    for seq in (1, 2, 3, 4):
        p.message(src(seq, text=f"m{seq}"), None, members)
    assert [(n.seq, n.count, n.preview) for n in p.notes] == [(1, 1, "m1")]
    st = p.changed[("bob", "c:1")]
    assert (st.pending, st.last_seq, st.preview, st.last_at) == (3, 4, "m4", T0)
    # the interval passes: the three go out as one, named by the last
    p = Planner(ctx, set(), T0 + MIN, MIN)
    p.flush([(st, 0)])
    assert [(n.key, n.seq, n.count, n.preview) for n in p.notes] == [("bob:c:1:4", 4, 3, "m4")]
    assert st.pending == 0 and st.last_at == T0 + MIN


def test_a_user_whose_last_device_went_after_the_message_had_it_live() -> None:
    p = Planner(NotifyContext(), set(), T0 + MIN, MIN, epoch="e1", gone={"bob": T0 + 1, "carol": T0})
    p.message(src(1), None, {"alice": 0, "bob": 0, "carol": 0, "dave": 0})
    assert sorted(n.key for n in p.notes) == ["e1:carol:c:1:1", "e1:dave:c:1:1"]  # carol went as it was sent
    assert p.outcomes["delivered"] == 1


def test_flush_drops_what_was_read_or_left_or_came_online() -> None:
    def pending(user: str) -> NotifyState:
        return NotifyState(user, "c:1", "dm", T0, pending=2, last_seq=9, sender="alice")

    p = Planner(NotifyContext(), {"online"}, T0 + MIN, MIN)
    p.flush([(pending("read"), 9), (pending("left"), -1), (pending("online"), 0), (pending("due"), 8)])
    assert [(n.user, n.count) for n in p.notes] == [("due", 2)]
    assert p.outcomes == {"read": 1, "left": 1, "online": 1, "emitted": 1}
    assert all(st.pending == 0 for st in p.changed.values())


def test_a_message_after_an_unflushed_interval_carries_the_count() -> None:
    st = NotifyState("bob", "c:1", "dm", T0, pending=2, last_seq=3, sender="alice")
    p = Planner(NotifyContext(states={("bob", "c:1"): st}), set(), T0 + 2 * MIN, MIN)
    p.message(src(4), None, {"alice": 0, "bob": 0})
    assert [(n.seq, n.count) for n in p.notes] == [(4, 3)]


def test_a_mention_stays_a_mention_when_coalesced_with_plain_messages() -> None:
    ctx = NotifyContext(states={("bob", "c:1"): NotifyState("bob", "c:1", "dm", T0)})
    p = Planner(ctx, set(), T0 + 1, MIN)
    p.message(src(1, mentions=("bob",)), None, {"alice": 0, "bob": 0})
    p.message(src(2), None, {"alice": 0, "bob": 0})
    assert p.changed[("bob", "c:1")].reason == MENTION


def test_quiet_hours_make_it_silent_not_dropped() -> None:
    ctx = NotifyContext(prefs={"bob": NotifyPrefs(quiet_from=0, quiet_to=60)})
    p = Planner(ctx, set(), T0 + 30 * MIN, MIN)
    p.message(src(1), None, {"alice": 0, "bob": 0})
    assert [n.silent for n in p.notes] == [True]
    assert p.outcomes == {"silent": 1}


def test_preview_is_bounded_in_code_points() -> None:
    assert preview("é" * PREVIEW_MAX) == "é" * PREVIEW_MAX
    long = preview("😀" * (PREVIEW_MAX + 5))
    assert len(long) == PREVIEW_MAX and long.endswith("\u2026")
