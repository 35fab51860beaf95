"""The four logical frames of chatd protocol v1.

Every frame on the wire is a map. Which keys it has tells what it is::

    request   {"id": ID, "op": OP, "d": {...}}          client -> server
    reply     {"id": ID, "d": {...}}                     server -> client
    error     {"id": ID, "error": {"code", "message", "temporary"[, "retry_after_ms"]}}
    push      {"push": TYPE, "d": {...}}                 server -> client, no id

``ID`` is chosen by the client: an integer in [0, 2**53) or a string of 1-64
characters. Replies echo it unchanged. Pushes never carry one.

The frames are plain frozen dataclasses; turning them into bytes is the job of
:mod:`chatd_protocol.codec`. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RequestId = int | str

MAX_ID = 2**53 - 1
MAX_ID_STR = 64


def valid_request_id(value: object) -> bool:
    """True if ``value`` may serve as a request id."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value <= MAX_ID
    if isinstance(value, str):
        return 0 < len(value) <= MAX_ID_STR
    return False


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    op: str
    d: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "d": self.d}


@dataclass(frozen=True, slots=True)
class Reply:
    id: RequestId
    d: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "d": self.d}


@dataclass(frozen=True, slots=True)
class ErrorReply:
    id: RequestId
    code: str
    message: str
    temporary: bool = False
    retry_after_ms: int | None = None

    def to_wire(self) -> dict[str, Any]:
        err: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "temporary": self.temporary,
        }
        if self.retry_after_ms is not None:
            err["retry_after_ms"] = self.retry_after_ms
        return {"id": self.id, "error": err}


@dataclass(frozen=True, slots=True)
class Push:
    type: str
    d: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"push": self.type, "d": self.d}


Frame = Request | Reply | ErrorReply | Push
ServerFrame = Reply | ErrorReply | Push
