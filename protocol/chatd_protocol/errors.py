"""Error codes (replies) and close codes (disconnects) of protocol v1.

Two families, as in centrifuge:

* an **error reply** refuses one request and keeps the socket open;
* a **close code** ends the socket and tells the client what to do next.

Close code ranges (the client decides by range, so new codes stay compatible):

* ``4000-4099``  reconnect with backoff, then catch up (``sync``);
* ``4100-4199``  get a fresh token before reconnecting;
* ``4200-4299``  protocol violation: a client bug, do not reconnect blindly.

Standard codes the server also uses: 1009 (frame over the size limit, sent by
the WebSocket layer before the frame is buffered), 1011 (internal error).

Exception tree (both server and client use it)::

    ProtocolError            a frame that can't be accepted
    ├── FrameError           undecodable or malformed frame -> close ``code``
    └── RequestError         well-formed frame, bad request -> error reply ``code``
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Close(IntEnum):
    # 40xx: reconnect and sync
    SHUTDOWN = 4000  # server is draining (restart/deploy); reconnect elsewhere
    SLOW_CONSUMER = 4001  # outbound buffer passed its cap; reconnect and sync
    # 41xx: re-authenticate
    AUTH_TIMEOUT = 4100  # no auth request within the auth timeout
    AUTH_FAILED = 4101  # token invalid, forged or of an unknown user type
    TOKEN_EXPIRED = 4102  # token was valid but expired; fetch a new one
    NOT_AUTHENTICATED = 4103  # a request other than auth came first
    SIGNED_OUT = 4104  # a backend signed the user out (admin.kick) or revoked the token (admin.revoke)
    # 42xx: protocol violation
    BAD_FRAME = 4200  # undecodable, not a map, or no valid request id
    WRONG_FRAME_TYPE = 4201  # text frame on msgpack or binary frame on json
    FLOOD = 4202  # far over the request rate limit
    UNSUPPORTED_SUBPROTOCOL = 4203  # no chatd subprotocol negotiated
    # standard
    MESSAGE_TOO_BIG = 1009
    INTERNAL = 1011


def close_action(code: int) -> str:
    """What a client should do after a close: ``reconnect``, ``reauth`` or ``stop``."""
    if 4000 <= code < 4100 or code in (1001, 1006, 1011, 1012, 1013):
        return "reconnect"
    if 4100 <= code < 4200:
        return "reauth"
    return "stop"


class Err(StrEnum):
    BAD_REQUEST = "bad_request"  # a field is missing, of the wrong type or out of range
    UNKNOWN_OP = "unknown_op"  # no such operation
    ALREADY_AUTHENTICATED = "already_authenticated"
    NOT_FOUND = "not_found"  # conversation or user does not exist
    NOT_MEMBER = "not_member"  # not a member of that conversation
    FORBIDDEN = "forbidden"  # member, but the role does not allow it
    BLOCKED = "blocked"  # the other side of a DM blocked you (or you them)
    MUTED = "muted"  # an admin muted you in this circle
    TOO_LONG = "too_long"  # message text over the limit
    RATE_LIMITED = "rate_limited"  # temporary; retry after retry_after_ms
    RECALL_WINDOW = "recall_window"  # own message older than the recall window
    CONFLICT = "conflict"  # state does not allow it (already a member, ...)
    LIMIT = "limit"  # a per-connection cap is reached (presence subscriptions)
    INSUFFICIENT = "insufficient_points"  # a tip or red packet over the sender's balance
    UNAVAILABLE = "unavailable"  # temporary; the store could not take it, retry
    INTERNAL = "internal"  # temporary; a bug on the server, never details
    UNAUTHORIZED = "unauthorized"  # the admin API only: no bearer token, or a refused one


TEMPORARY = frozenset({Err.RATE_LIMITED, Err.UNAVAILABLE, Err.INTERNAL})


class ProtocolError(Exception):
    """Root of protocol errors."""


class FrameError(ProtocolError):
    """The frame can't be accepted at all; the socket closes with ``code``."""

    def __init__(self, code: Close, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class RequestError(ProtocolError):
    """The request is refused with an error reply; the socket stays open."""

    def __init__(
        self,
        code: Err,
        message: str,
        *,
        retry_after_ms: int | None = None,
        request_id: int | str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.request_id = request_id  # set when raised while decoding a frame

    @property
    def temporary(self) -> bool:
        return self.code in TEMPORARY

    def wire(self) -> dict[str, object]:
        """The error object of an error reply (protocol/README.md §2)."""
        err: dict[str, object] = {"code": self.code.value, "message": self.message, "temporary": self.temporary}
        if self.retry_after_ms is not None:
            err["retry_after_ms"] = self.retry_after_ms
        return err
