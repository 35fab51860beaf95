"""Who runs an op: the caller context every op handler takes instead of a socket.

A WebSocket session makes one :class:`Caller` when it authenticates; an HTTP
admin request or a test makes one with no sink. Ops read the user, the
identity and its scopes, and reach the caller's socket (presence devices and
subscriptions) only through the optional ``sink``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatd_protocol import CODECS, JSON, Codec, Scope

from ..auth import Identity
from .hub import Sink

# shared by every caller of a type (one frozenset is 216 bytes, times every socket)
_USER = frozenset({Scope.USER})
_SCOPES = {"staff": frozenset({Scope.USER, Scope.STAFF}), "bot": frozenset({Scope.USER, Scope.BOT})}


def scopes_of(identity: Identity) -> frozenset[Scope]:
    """Every user token holds ``user``; staff and bot tokens add their own, and
    a token whose ``scope`` claim says ``admin`` (a backend's) adds ``admin``."""
    base = _SCOPES.get(identity.type, _USER)
    return base | {Scope.ADMIN} if "admin" in identity.scopes else base


@dataclass(frozen=True, slots=True)
class Caller:
    user: str
    identity: Identity
    scopes: frozenset[Scope]
    author: dict[str, Any]  # the identity's snapshot carried by every message it sends
    codec: Codec  # the encoding replies go out in (reply size limits are per encoding)
    sink: Sink | None = None  # the caller's socket, if it has one

    @classmethod
    def of(cls, identity: Identity, sink: Sink | None = None, codec: Codec | None = None) -> Caller:
        return cls(identity.id, identity, scopes_of(identity), identity.author(), codec or CODECS[JSON], sink)

    @property
    def is_staff(self) -> bool:
        return Scope.STAFF in self.scopes
