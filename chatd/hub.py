"""Local fan-out: which sockets of this process follow which conversation, and
pushing one frame to all of them.

A push is encoded once per codec and framed once (server frames are unmasked, so
the same bytes serve every socket), then handed to each socket's transport
without awaiting (``Conn.write``; a socket over its buffer cap is closed as a slow
consumer instead of growing memory).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chatd_protocol import CODECS, JSON, MSGPACK

from . import wsframe
from .metrics import Metrics

if TYPE_CHECKING:
    from .conn import Conn

# Codec slot per connection: topics keep one set per codec so a push encodes
# only for codecs somebody listens with.
CODEC_SLOTS = (MSGPACK, JSON)
_CODECS = tuple(CODECS[name] for name in CODEC_SLOTS)


def encode_push(slot: int, kind: str, d: dict[str, Any]) -> bytes:
    codec = _CODECS[slot]
    return wsframe.frame(codec.dumps({"push": kind, "d": d}), codec.text)


def push_body(kind: str, d: dict[str, Any]) -> bytes:
    """The msgpack encoding of a push: what msgpack sockets get (framed) and what
    the bus carries to other nodes."""
    return _CODECS[0].dumps({"push": kind, "d": d})


def _ignore(key: str, added: bool) -> None:
    pass


class Hub:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.topics: dict[str, tuple[set[Conn], set[Conn]]] = {}
        self.users: dict[str, set[Conn]] = {}
        # told when a conversation gains its first / loses its last local socket,
        # and likewise a user (the fan-out layer subscribes to the bus accordingly)
        self.on_topic: Callable[[str, bool], None] = _ignore
        self.on_user: Callable[[str, bool], None] = _ignore

    # -- registry -------------------------------------------------------------

    def register(self, conn: Conn) -> None:
        """``conn`` gets the user's follow/unfollow changes from now on."""
        peers = self.users.get(conn.user)
        if peers is None:
            peers = self.users[conn.user] = set()
            self.on_user(conn.user, True)
        peers.add(conn)

    def remove(self, conn: Conn) -> None:
        for conv in conn.convs:
            topic = self.topics.get(conv)
            if topic is not None:
                topic[conn.slot].discard(conn)
                if not topic[0] and not topic[1]:
                    del self.topics[conv]
                    self.on_topic(conv, False)
        conn.convs.clear()
        peers = self.users.get(conn.user)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self.users[conn.user]
                self.on_user(conn.user, False)

    def follow(self, conn: Conn, conv: str) -> None:
        topic = self.topics.get(conv)
        if topic is None:
            topic = self.topics[conv] = (set(), set())
            self.on_topic(conv, True)
        topic[conn.slot].add(conn)
        conn.convs.add(conv)
        if conn.left is not None:
            conn.left.discard(conv)

    def unfollow(self, conn: Conn, conv: str) -> None:
        topic = self.topics.get(conv)
        if topic is not None:
            topic[conn.slot].discard(conn)
            if not topic[0] and not topic[1]:
                del self.topics[conv]
                self.on_topic(conv, False)
        conn.convs.discard(conv)
        if conn.left is not None:
            conn.left.add(conv)

    def user_follow(self, user: str, conv: str, on: bool = True) -> None:
        """All of ``user``'s local sockets start (or stop) following ``conv``."""
        for conn in tuple(self.users.get(user, ())):
            if on:
                self.follow(conn, conv)
            else:
                self.unfollow(conn, conv)

    # -- fan-out --------------------------------------------------------------

    def publish(self, conv: str, kind: str, d: dict[str, Any]) -> int:
        """Push to every local socket following ``conv``. Returns the count."""
        topic = self.topics.get(conv)
        if topic is None:
            return 0
        sent = 0
        for slot in (0, 1):
            conns = topic[slot]
            if conns:
                data = encode_push(slot, kind, d)
                # tuple(): a write may close a slow consumer, which leaves the set
                for conn in tuple(conns):
                    conn.write(data)
                sent += len(conns)
        self.metrics.deliveries += sent
        return sent

    def deliver(self, conns: tuple[set[Conn], set[Conn]], body: bytes, obj: dict[str, Any] | None) -> int:
        """Push an already msgpack-encoded push (``body``) to ``conns`` (a topic,
        or a user's sockets, split by codec). JSON sockets get it re-encoded once,
        from ``obj`` (the push as a dict) when given, else decoded from ``body``."""
        sent = 0
        mp, js = conns
        if mp:
            data = wsframe.frame(body, False)
            for conn in tuple(mp):  # a write may close a slow consumer
                conn.write(data)
            sent += len(mp)
        if js:
            data = wsframe.frame(_CODECS[1].dumps(obj if obj is not None else _CODECS[0].loads(body)), True)
            for conn in tuple(js):
                conn.write(data)
            sent += len(js)
        self.metrics.deliveries += sent
        return sent

    def user_conns(self, user: str) -> tuple[set[Conn], set[Conn]] | None:
        conns = self.users.get(user)
        if not conns:
            return None
        return ({c for c in conns if c.slot == 0}, {c for c in conns if c.slot == 1})

    def connections(self) -> list[Conn]:
        return [c for conns in self.users.values() for c in conns]
