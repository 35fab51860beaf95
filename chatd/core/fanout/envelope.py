"""Bus keys and envelope payloads between nodes (docs/design.md, "Fan-out
across processes").

Keys: ``c:<conv>`` (a conversation), ``u:<user>`` (a user's sockets), ``p:<user>``
(a user's presence). The first payload byte says what an envelope is:

- ``c:``: a push (``OP_PUSH`` + seq, 8 bytes big-endian, 0 = unordered + the
  msgpack push), an unordered push for every follower but one user's sockets
  (``OP_PUSH_EXCEPT`` + the user id's length, 1 byte + the user id + the msgpack
  push: a service group's inbox row, not for its owner), "cached state changed"
  (``OP_CHANGED``) or a live session's state change (``OP_STATE`` + msgpack: a
  vote's count, a question's new form; ``chatd/core/live.py`` applies it);
- ``u:``: a push to the user's sockets (``OP_PUSH`` + msgpack push),
  follow/unfollow a conversation (``OP_FOLLOW`` / ``OP_UNFOLLOW`` + conv id), or
  sign out the sockets whose token was issued before a time or whose auth
  began before another (``OP_SIGN_OUT`` + unix seconds + ms, 8 bytes each,
  big-endian);
- ``p:``: a presence state (owned by ``chatd.presence``).
"""

from __future__ import annotations

CONV = "c:"
USER = "u:"
PRESENCE = "p:"

OP_PUSH = 0
OP_CHANGED = 1
OP_FOLLOW = 2
OP_UNFOLLOW = 3
OP_SIGN_OUT = 4
OP_PUSH_EXCEPT = 5
OP_STATE = 6

_CHANGED = bytes((OP_CHANGED,))


def conv_push(seq: int, body: bytes) -> bytes:
    return b"".join((b"\x00", seq.to_bytes(8, "big"), body))


def conv_changed() -> bytes:
    return _CHANGED


def user_push(body: bytes) -> bytes:
    return b"\x00" + body


def follow(conv: str, on: bool) -> bytes:
    return bytes((OP_FOLLOW if on else OP_UNFOLLOW,)) + conv.encode()


def sign_out(before: int, kicked: int) -> bytes:
    return bytes((OP_SIGN_OUT,)) + before.to_bytes(8, "big") + kicked.to_bytes(8, "big")


def sign_out_times(payload: bytes) -> tuple[int, int]:
    return int.from_bytes(payload[1:9], "big"), int.from_bytes(payload[9:17], "big")


def push_seq(payload: bytes) -> int:
    return int.from_bytes(payload[1:9], "big")


def conv_push_except(user: str, body: bytes) -> bytes:
    who = user.encode()
    return bytes((OP_PUSH_EXCEPT, len(who))) + who + body


def push_except(payload: bytes) -> tuple[str, bytes]:
    """(the user left out, the msgpack push) of an ``OP_PUSH_EXCEPT`` payload."""
    n = payload[1]
    return payload[2 : 2 + n].decode(), payload[2 + n :]


def state(payload: bytes) -> bytes:
    return bytes((OP_STATE,)) + payload
