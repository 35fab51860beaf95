"""Local fan-out: which sockets of this process follow which conversation, and
pushing one frame to all of them.

A push is encoded once per codec and framed once (server frames are unmasked, so
the same bytes serve every socket), then handed to each socket's transport
without awaiting (``Conn.write``; a socket over its buffer cap is closed as a slow
consumer instead of growing memory).
"""

from __future__ import annotations

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


class Hub:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.topics: dict[str, tuple[set[Conn], set[Conn]]] = {}
        self.users: dict[str, set[Conn]] = {}

    # -- registry -------------------------------------------------------------

    def register(self, conn: Conn) -> None:
        """``conn`` gets the user's follow/unfollow changes from now on."""
        self.users.setdefault(conn.user, set()).add(conn)

    def remove(self, conn: Conn) -> None:
        for conv in conn.convs:
            topic = self.topics.get(conv)
            if topic is not None:
                topic[conn.slot].discard(conn)
                if not topic[0] and not topic[1]:
                    del self.topics[conv]
        conn.convs.clear()
        peers = self.users.get(conn.user)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self.users[conn.user]

    def follow(self, conn: Conn, conv: str) -> None:
        topic = self.topics.get(conv)
        if topic is None:
            topic = self.topics[conv] = (set(), set())
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

    def connections(self) -> list[Conn]:
        return [c for conns in self.users.values() for c in conns]
