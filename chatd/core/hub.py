"""Local fan-out: which sinks (sockets) of this process follow which
conversation, and pushing one frame to all of them.

A push is encoded once per codec and framed once (server frames are unmasked,
so the same bytes serve every socket), then handed to each :class:`Sink`
without awaiting (a sink over its buffer cap closes itself as a slow consumer
instead of growing memory). The hub keeps its own bookkeeping (what each sink
follows); a sink is only something to write to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from chatd_protocol import CODECS, JSON, MSGPACK

from ..metrics import Metrics

# Codec slot per sink: topics keep one set per codec so a push encodes only for
# codecs somebody listens with.
CODEC_SLOTS = (MSGPACK, JSON)
_CODECS = tuple(CODECS[name] for name in CODEC_SLOTS)

Framer = Callable[[bytes, bool], bytes]  # (payload, text?) -> one complete frame


class Sink(Protocol):
    """All the hub and presence see of a socket: a bounded write that never
    awaits (``chatd/edge/sink.py``)."""

    slot: int  # index into CODEC_SLOTS

    def write(self, data: bytes) -> None:
        """Queue one complete frame. A sink that cannot take it (closed, over its
        cap) drops it and closes itself; it never raises."""
        ...

    def sign_out(self, before: int, kicked: int) -> None:
        """Close the socket with 4104 if its token was issued before ``before``
        (unix s) or its auth began before ``kicked`` (ms): a backend signed its
        user out."""
        ...


Topic = tuple[set[Sink], set[Sink]]  # followers by codec slot


def _ignore(key: str, added: bool) -> None:
    pass


class Hub:
    def __init__(self, metrics: Metrics, frame: Framer) -> None:
        self.metrics = metrics
        self.frame = frame
        self.topics: dict[str, Topic] = {}
        # a user's sockets on this process: a tuple (a user has one to three; a
        # set costs 216 bytes however few it holds), replaced on every change
        self.users: dict[str, tuple[Sink, ...]] = {}
        self._follows: dict[Sink, set[str]] = {}  # registered sink -> conversations it follows
        # sinks whose user's memberships are being read (auth): conversations
        # left meanwhile, so the snapshot does not re-follow them
        self._left: dict[Sink, set[str]] = {}
        # told when a conversation gains its first / loses its last local sink,
        # and likewise a user (the fan-out layer subscribes to the bus accordingly)
        self.on_topic: Callable[[str, bool], None] = _ignore
        self.on_user: Callable[[str, bool], None] = _ignore

    # -- encoding -------------------------------------------------------------

    def encode(self, slot: int, kind: str, d: dict[str, Any]) -> bytes:
        """A push as one frame for sinks of codec ``slot``."""
        codec = _CODECS[slot]
        return self.frame(codec.dumps({"push": kind, "d": d}), codec.text)

    @staticmethod
    def body(kind: str, d: dict[str, Any]) -> bytes:
        """The msgpack encoding of a push: what msgpack sockets get (framed) and
        what the bus carries to other nodes."""
        return _CODECS[0].dumps({"push": kind, "d": d})

    # -- registry -------------------------------------------------------------

    def register(self, user: str, sink: Sink) -> None:
        """``sink`` gets ``user``'s follow/unfollow changes from now on; until
        :meth:`settle`, conversations it is made to leave are remembered."""
        peers = self.users.get(user)
        if peers is None:
            self.users[user] = (sink,)
            self.on_user(user, True)
        elif sink not in peers:
            self.users[user] = (*peers, sink)
        self._follows[sink] = set()
        self._left[sink] = set()

    def settle(self, sink: Sink, convs: list[str]) -> None:
        """Follow the user's conversations as read after :meth:`register`, except
        those left meanwhile (a join meanwhile is followed already)."""
        left = self._left.pop(sink, None)
        for conv in convs:
            if left is None or conv not in left:
                self.follow(sink, conv)

    def settled(self, sink: Sink) -> bool:
        return sink in self._follows and sink not in self._left

    def remove(self, user: str, sink: Sink) -> None:
        for conv in self._follows.pop(sink, ()):
            self._leave_topic(sink, conv)
        self._left.pop(sink, None)
        peers = self.users.get(user)
        if peers is not None and sink in peers:
            rest = tuple(s for s in peers if s is not sink)
            if rest:
                self.users[user] = rest
            else:
                del self.users[user]
                self.on_user(user, False)

    def sign_out(self, user: str, before: int, kicked: int) -> None:
        for sink in self.users.get(user, ()):
            sink.sign_out(before, kicked)

    def follows(self, sink: Sink) -> set[str]:
        return self._follows.get(sink, set())

    def follow(self, sink: Sink, conv: str) -> None:
        follows = self._follows.get(sink)
        if follows is None:  # removed meanwhile
            return
        topic = self.topics.get(conv)
        if topic is None:
            topic = self.topics[conv] = (set(), set())
            self.on_topic(conv, True)
        topic[sink.slot].add(sink)
        follows.add(conv)
        left = self._left.get(sink)
        if left is not None:
            left.discard(conv)

    def unfollow(self, sink: Sink, conv: str) -> None:
        self._leave_topic(sink, conv)
        follows = self._follows.get(sink)
        if follows is not None:
            follows.discard(conv)
        left = self._left.get(sink)
        if left is not None:
            left.add(conv)

    def _leave_topic(self, sink: Sink, conv: str) -> None:
        topic = self.topics.get(conv)
        if topic is not None:
            topic[sink.slot].discard(sink)
            if not topic[0] and not topic[1]:
                del self.topics[conv]
                self.on_topic(conv, False)

    def user_follow(self, user: str, conv: str, on: bool = True) -> None:
        """All of ``user``'s local sinks start (or stop) following ``conv``."""
        for sink in self.users.get(user, ()):
            if on:
                self.follow(sink, conv)
            else:
                self.unfollow(sink, conv)

    # -- fan-out --------------------------------------------------------------

    def publish(self, conv: str, kind: str, d: dict[str, Any]) -> int:
        """Push to every local sink following ``conv``. Returns the count."""
        topic = self.topics.get(conv)
        if topic is None:
            return 0
        sent = 0
        for slot in (0, 1):
            sinks = topic[slot]
            if sinks:
                data = self.encode(slot, kind, d)
                # tuple(): a write may close a slow consumer, which leaves the set
                for sink in tuple(sinks):
                    sink.write(data)
                sent += len(sinks)
        self.metrics.deliveries += sent
        return sent

    def deliver(self, sinks: Topic, body: bytes, obj: dict[str, Any] | None) -> int:
        """Push an already msgpack-encoded push (``body``) to ``sinks`` (a topic,
        or a user's sinks, split by codec). JSON sinks get it re-encoded once,
        from ``obj`` (the push as a dict) when given, else decoded from ``body``."""
        sent = 0
        mp, js = sinks
        if mp:
            data = self.frame(body, False)
            for sink in tuple(mp):  # a write may close a slow consumer
                sink.write(data)
            sent += len(mp)
        if js:
            data = self.frame(_CODECS[1].dumps(obj if obj is not None else _CODECS[0].loads(body)), True)
            for sink in tuple(js):
                sink.write(data)
            sent += len(js)
        self.metrics.deliveries += sent
        return sent

    def user_sinks(self, user: str) -> Topic | None:
        sinks = self.users.get(user)
        if not sinks:
            return None
        return ({s for s in sinks if s.slot == 0}, {s for s in sinks if s.slot == 1})

    def sinks(self) -> list[Sink]:
        return [s for sinks in self.users.values() for s in sinks]
