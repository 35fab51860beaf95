"""Signed tokens (JWT, HS256 pinned) -> Identity.

PyJWT does the signature and expiry checks; we pin the algorithm so a token
signed with ``none`` or an asymmetric algorithm is never accepted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from chatd_protocol import Close
from chatd_protocol.ops import USER_ID_RE, USER_TYPES

from .config import DEV_SECRET

ALGORITHM = "HS256"
MAX_EXP = 253_402_300_799  # 9999-12-31T23:59:59Z: an exp past it is no date, it is an attack


@dataclass(frozen=True, slots=True)
class Identity:
    id: str
    name: str
    type: str
    badges: tuple[str, ...]
    roles: tuple[str, ...]
    exp: int

    @property
    def is_staff(self) -> bool:
        return self.type == "staff"

    def author(self) -> dict[str, Any]:
        """The snapshot carried by every message this identity sends."""
        return {
            "name": self.name,
            "type": self.type,
            "badges": list(self.badges),
            "roles": list(self.roles),
        }

    def user(self) -> dict[str, Any]:
        return {"id": self.id, **self.author()}


class AuthError(Exception):
    def __init__(self, code: Close, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def make_token(
    user: str,
    type: str,
    *,
    name: str | None = None,
    badges: list[str] | tuple[str, ...] = (),
    roles: list[str] | tuple[str, ...] = (),
    ttl: int = 86400,
    secret: str = DEV_SECRET,
    now: float | None = None,
) -> str:
    """A signed token; ``now`` (unix seconds, default the system clock) is when it is issued."""
    if not USER_ID_RE.fullmatch(user):
        raise ValueError("user id must match [A-Za-z0-9_.@-]{1,64}")
    if type not in USER_TYPES:
        raise ValueError("type must be one of " + ", ".join(USER_TYPES))
    claims = {
        "sub": user,
        "name": name or user,
        "typ": type,
        "badges": list(badges),
        "roles": list(roles),
        "exp": int(time.time() if now is None else now) + ttl,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 32:
        raise AuthError(Close.AUTH_FAILED, f"{what} must be a list")
    if not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
        raise AuthError(Close.AUTH_FAILED, f"{what} must hold short strings")
    return tuple(value)


def verify_token(token: str, secret: str, now: float | None = None) -> Identity:
    """The token's identity, or AuthError. ``now`` (unix seconds) is the server
    clock's; default the system clock."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"], "verify_exp": now is None},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(Close.TOKEN_EXPIRED, "token expired") from None
    except jwt.PyJWTError:
        raise AuthError(Close.AUTH_FAILED, "invalid token") from None
    exp = claims["exp"]
    # comparisons, not float(): an int of 400 digits has no float, NaN compares False
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not exp <= MAX_EXP or exp != exp:
        raise AuthError(Close.AUTH_FAILED, "invalid expiry")
    if now is not None and exp <= now:
        raise AuthError(Close.TOKEN_EXPIRED, "token expired")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not USER_ID_RE.fullmatch(sub):
        raise AuthError(Close.AUTH_FAILED, "invalid user id")
    typ = claims.get("typ")
    if typ not in USER_TYPES:
        raise AuthError(Close.AUTH_FAILED, "unknown user type")
    name = claims.get("name", sub)
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise AuthError(Close.AUTH_FAILED, "invalid name")
    return Identity(
        id=sub,
        name=name,
        type=str(typ),
        badges=_str_list(claims.get("badges", []), "badges"),
        roles=_str_list(claims.get("roles", []), "roles"),
        exp=int(claims["exp"]),
    )
