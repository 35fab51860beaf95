"""Local fan-out (chatd/core/hub.py): who follows what, interest callbacks on
first and last follower, the auth race, and one encoding per codec."""

from __future__ import annotations

from typing import Any

from chatd_protocol import CODECS, JSON, MSGPACK
from support import FakeSink

from chatd.core.hub import Hub
from chatd.edge import wsframe
from chatd.metrics import Metrics

MP, JS = CODECS[MSGPACK], CODECS[JSON]


class CountingFramer:
    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bool]] = []

    def __call__(self, payload: bytes, text: bool) -> bytes:
        self.calls.append((payload, text))
        return wsframe.frame(payload, text)


def make() -> tuple[Hub, CountingFramer, list[tuple[str, str, bool]]]:
    framer = CountingFramer()
    hub = Hub(Metrics(), framer)
    events: list[tuple[str, str, bool]] = []
    hub.on_topic = lambda conv, added: events.append(("topic", conv, added))
    hub.on_user = lambda user, added: events.append(("user", user, added))
    return hub, framer, events


def online(hub: Hub, user: str, *sinks: FakeSink, convs: tuple[str, ...] = ()) -> None:
    for s in sinks:
        hub.register(user, s)
        hub.settle(s, list(convs))


def frame_of(codec: Any, push: dict[str, Any]) -> bytes:
    return wsframe.frame(codec.dumps(push), codec.text)


# -- bookkeeping -----------------------------------------------------------------


def test_on_user_fires_on_the_first_and_last_sink_of_a_user() -> None:
    hub, _, events = make()
    a, b = FakeSink(), FakeSink(1)
    hub.register("alice", a)
    hub.register("alice", b)
    assert events == [("user", "alice", True)]
    hub.remove("alice", a)
    assert events == [("user", "alice", True)]
    hub.remove("alice", b)
    assert events == [("user", "alice", True), ("user", "alice", False)]
    assert "alice" not in hub.users


def test_on_topic_fires_on_the_first_and_last_follower_of_a_conversation() -> None:
    hub, _, events = make()
    a, b = FakeSink(0), FakeSink(1)
    online(hub, "alice", a)
    online(hub, "bob", b)
    events.clear()
    hub.follow(a, "c:1")
    hub.follow(b, "c:1")  # other codec, same topic
    hub.follow(a, "c:1")  # again: nothing new
    assert events == [("topic", "c:1", True)]
    hub.unfollow(a, "c:1")
    assert events == [("topic", "c:1", True)]
    hub.unfollow(b, "c:1")
    assert events == [("topic", "c:1", True), ("topic", "c:1", False)]
    assert hub.topics == {}
    hub.unfollow(b, "c:1")  # not following: nothing
    assert len(events) == 2


def test_remove_unfollows_everything_the_sink_followed() -> None:
    hub, _, events = make()
    a, b = FakeSink(), FakeSink()
    online(hub, "alice", a, convs=("c:1", "c:2"))
    online(hub, "bob", b, convs=("c:2",))
    events.clear()
    hub.remove("alice", a)
    assert sorted(events) == [("topic", "c:1", False), ("user", "alice", False)]
    assert set(hub.topics) == {"c:2"} and hub.follows(a) == set()
    assert hub.publish("c:1", "msg", {"x": 1}) == 0
    assert hub.publish("c:2", "msg", {"x": 1}) == 1


def test_user_follow_moves_every_sink_of_the_user() -> None:
    hub, _, _ = make()
    a, b, other = FakeSink(0), FakeSink(1), FakeSink(0)
    online(hub, "alice", a, b)
    online(hub, "bob", other)
    hub.user_follow("alice", "c:9")
    assert hub.follows(a) == hub.follows(b) == {"c:9"} and hub.follows(other) == set()
    assert hub.user_sinks("alice") == ({a}, {b})
    hub.user_follow("alice", "c:9", on=False)
    assert hub.follows(a) == hub.follows(b) == set() and "c:9" not in hub.topics
    hub.user_follow("nobody", "c:9")  # no sinks: nothing
    assert hub.user_sinks("nobody") is None and "c:9" not in hub.topics


# -- the auth race: memberships read while changes arrive -------------------------


def test_a_conversation_left_during_auth_is_not_followed_by_the_snapshot() -> None:
    hub, _, _ = make()
    s = FakeSink()
    hub.register("bob", s)
    assert not hub.settled(s)
    hub.user_follow("bob", "c:left", on=False)  # bob left while his memberships were read
    hub.settle(s, ["c:left", "c:kept"])  # the snapshot, read before the leave
    assert hub.settled(s)
    assert hub.follows(s) == {"c:kept"}
    assert "c:left" not in hub.topics


def test_a_conversation_joined_during_auth_counts() -> None:
    hub, _, _ = make()
    s = FakeSink()
    hub.register("bob", s)
    hub.user_follow("bob", "dm:alice:bob")  # opened while the snapshot was read
    hub.settle(s, ["c:1"])  # the snapshot does not have it
    assert hub.follows(s) == {"c:1", "dm:alice:bob"}


def test_left_then_joined_again_during_auth_is_followed() -> None:
    hub, _, _ = make()
    s = FakeSink()
    hub.register("bob", s)
    hub.unfollow(s, "c:1")
    hub.follow(s, "c:1")
    hub.settle(s, ["c:1"])
    assert hub.follows(s) == {"c:1"}


def test_joined_then_left_during_auth_is_not_followed() -> None:
    hub, _, _ = make()
    s = FakeSink()
    hub.register("bob", s)
    hub.follow(s, "c:1")
    hub.unfollow(s, "c:1")
    hub.settle(s, ["c:1"])
    assert hub.follows(s) == set() and "c:1" not in hub.topics


def test_a_leave_after_settle_is_not_remembered_for_later() -> None:
    hub, _, _ = make()
    s = FakeSink()
    online(hub, "bob", s, convs=("c:1",))
    hub.unfollow(s, "c:1")
    hub.follow(s, "c:1")
    assert hub.follows(s) == {"c:1"}


def test_a_sink_removed_during_auth_follows_nothing_at_settle() -> None:
    hub, _, events = make()
    s = FakeSink()
    hub.register("bob", s)
    hub.remove("bob", s)
    hub.settle(s, ["c:1"])
    assert hub.topics == {} and not hub.settled(s)
    assert ("topic", "c:1", True) not in events


# -- encoding and delivery ----------------------------------------------------


def test_publish_encodes_once_per_codec_and_every_sink_gets_the_same_bytes() -> None:
    hub, framer, _ = make()
    mp = [FakeSink(0) for _ in range(3)]
    js = [FakeSink(1) for _ in range(2)]
    for i, s in enumerate(mp + js):
        online(hub, f"u{i}", s, convs=("c:1",))
    d = {"conv": "c:1", "seq": 5, "text": "你好"}
    assert hub.publish("c:1", "msg", d) == 5
    assert hub.metrics.deliveries == 5
    assert [text for _, text in framer.calls] == [False, True]  # one framing per codec
    push = {"push": "msg", "d": d}
    assert all(s.writes == [frame_of(MP, push)] for s in mp)
    assert all(s.writes == [frame_of(JS, push)] for s in js)
    assert all(s.writes[0] is mp[0].writes[0] for s in mp)  # one object, written to all
    assert all(s.writes[0] is js[0].writes[0] for s in js)


def test_no_json_encoding_without_a_json_follower() -> None:
    hub, framer, _ = make()
    s = FakeSink(0)
    online(hub, "alice", s, convs=("c:1",))
    hub.publish("c:1", "typing", {"conv": "c:1", "user": "bob"})
    assert len(framer.calls) == 1 and framer.calls[0][1] is False
    assert hub.publish("c:nobody", "msg", {}) == 0
    assert len(framer.calls) == 1


def test_deliver_reencodes_json_from_the_msgpack_body() -> None:
    hub, framer, _ = make()
    mp, js = FakeSink(0), FakeSink(1)
    online(hub, "alice", mp, js, convs=("c:1",))
    push: dict[str, Any] = {"push": "msg", "d": {"conv": "c:1", "seq": 2, "text": "from another node"}}
    body = hub.body("msg", push["d"])
    assert body == MP.dumps(push)
    assert hub.deliver(hub.topics["c:1"], body, None) == 2
    assert mp.writes == [wsframe.frame(body, False)]
    assert js.writes == [frame_of(JS, push)]
    assert len(framer.calls) == 2
    # with the push at hand, the same frames
    assert hub.deliver(hub.topics["c:1"], body, push) == 2
    assert mp.writes[1] == mp.writes[0] and js.writes[1] == js.writes[0]


def test_deliver_to_a_users_sinks() -> None:
    hub, _, _ = make()
    mp, js, other = FakeSink(0), FakeSink(1), FakeSink(0)
    online(hub, "alice", mp, js)
    online(hub, "bob", other)
    push: dict[str, Any] = {"push": "points", "d": {"points": 5}}
    sinks = hub.user_sinks("alice")
    assert sinks is not None
    assert hub.deliver(sinks, hub.body("points", push["d"]), push) == 2
    assert js.pushes() == mp.pushes() == [push]
    assert other.writes == []


def test_a_sink_that_goes_away_while_written_does_not_break_the_publish() -> None:
    hub, _, events = make()
    slow = FakeSink(0)
    slow.on_write = lambda data: hub.remove("slow", slow)  # a slow consumer closes itself
    others = [FakeSink(0), FakeSink(0), FakeSink(1)]
    online(hub, "slow", slow, convs=("c:1",))
    for i, s in enumerate(others):
        online(hub, f"u{i}", s, convs=("c:1",))
    hub.publish("c:1", "msg", {"seq": 1})
    got = [s for s in others if len(s.writes) == 1]
    assert got == others
    assert slow.writes and hub.follows(slow) == set()
    assert ("user", "slow", False) in events
    hub.publish("c:1", "msg", {"seq": 2})
    assert len(slow.writes) == 1 and all(len(s.writes) == 2 for s in others)


def test_the_last_follower_going_away_while_written_drops_the_topic() -> None:
    hub, _, events = make()
    only = FakeSink(1)
    only.on_write = lambda data: hub.remove("alice", only)
    online(hub, "alice", only, convs=("c:1",))
    hub.publish("c:1", "msg", {"seq": 1})
    assert len(only.writes) == 1
    assert hub.topics == {} and ("topic", "c:1", False) in events
