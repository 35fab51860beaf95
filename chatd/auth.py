"""Signed tokens (JWT) -> Identity.

PyJWT does the signature checks; the :class:`Verifier` pins which algorithms are
accepted and which key goes with each, so a token signed with ``none``, with an
algorithm the deployment did not choose, or with the right algorithm and a key
meant for another (the RS256 public key used as an HS256 secret) is refused.

Keys: an HS256 secret (``--secret``; the development secret only on loopback
and only when no other key is configured), an RS256 or EdDSA public key in PEM
(``--token-public-key``), or a JWKS file of public keys chosen by the token's
``kid`` (``--token-jwks``): the issuing backend keeps the private key and chatd
only verifies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from chatd_protocol import Close
from chatd_protocol.ops import USER_ID_RE, USER_TYPES

from .config import DEV_SECRET

ALGORITHM = "HS256"  # what make_token signs with (development and tests)
SUPPORTED = ("HS256", "RS256", "EdDSA")
MAX_EXP = 253_402_300_799  # 9999-12-31T23:59:59Z: an exp past it is no date, it is an attack
CLOCK_SKEW_S = 300  # an iat or nbf this far ahead of the server's clock is still taken
TOKEN_SCOPES = ("admin",)  # what a token's ``scope`` claim may grant (a backend's admin token)


@dataclass(frozen=True, slots=True)
class Identity:
    id: str
    name: str
    type: str
    badges: tuple[str, ...]
    roles: tuple[str, ...]
    exp: int
    scopes: tuple[str, ...] = ()  # granted by the token's ``scope`` claim (TOKEN_SCOPES)
    iat: int = 0  # unix seconds the token was issued (its ``iat``; 0 without one): admin.revoke judges by it

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
    scopes: list[str] | tuple[str, ...] = (),
    issued_at: bool = True,
) -> str:
    """A signed token; ``now`` (unix seconds, default the system clock) is when it is
    issued: its ``iat`` (left out with ``issued_at=False``) and the start of its ``ttl``."""
    if not USER_ID_RE.fullmatch(user):
        raise ValueError("user id must match [A-Za-z0-9_.@-]{1,64}")
    if type not in USER_TYPES:
        raise ValueError("type must be one of " + ", ".join(USER_TYPES))
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": user,
        "name": name or user,
        "typ": type,
        "badges": list(badges),
        "roles": list(roles),
        "exp": issued + ttl,
    }
    if issued_at:
        claims["iat"] = issued
    unknown = set(scopes) - set(TOKEN_SCOPES)
    if unknown:
        raise ValueError(f"scope must be one of {', '.join(TOKEN_SCOPES)} (not {', '.join(sorted(unknown))})")
    if scopes and type != "bot":
        raise ValueError("the admin scope is for backends: use --type bot")
    if scopes:
        claims["scope"] = sorted(set(scopes))
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 32:
        raise AuthError(Close.AUTH_FAILED, f"{what} must be a list")
    if not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
        raise AuthError(Close.AUTH_FAILED, f"{what} must hold short strings")
    return tuple(value)


def verify_token(token: str, secret: str, now: float | None = None) -> Identity:
    """An HS256 token's identity, or AuthError (``now``: unix seconds of the
    server's clock; default the system clock)."""
    return Verifier(secret=secret).verify(token, now)


class Verifier:
    """The tokens this server accepts."""

    def __init__(
        self,
        secret: str | None = None,
        public_key: Any = None,
        jwks: dict[str, Any] | None = None,
        algorithms: tuple[str, ...] = (),
    ) -> None:
        self.secret = secret
        self.public_key = public_key  # a cryptography RSA or Ed25519 public key
        self.jwks = jwks or {}  # kid -> jwt.PyJWK
        offered = set()
        if secret is not None:
            offered.add("HS256")
        if public_key is not None:
            offered.add(_alg_of(public_key))
        offered |= {k.algorithm_name for k in self.jwks.values()}
        chosen = set(algorithms) if algorithms else offered
        unknown = chosen - set(SUPPORTED)
        if unknown:
            raise ValueError(f"token algorithms {sorted(unknown)} are not supported (only {', '.join(SUPPORTED)})")
        keyless = chosen - offered
        if keyless:
            raise ValueError(f"token algorithms {sorted(keyless)} have no key configured")
        if not chosen:
            raise ValueError("no token can be verified: configure a secret, a public key or a JWKS")
        self.algorithms = frozenset(chosen)

    @classmethod
    def from_files(
        cls, secret: str | None, public_key_path: str | None, jwks_path: str | None, algorithms: tuple[str, ...]
    ) -> Verifier:
        """Keys from the configured files; ValueError saying which file is wrong and how."""
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        key = None
        if public_key_path:
            try:
                with open(public_key_path, "rb") as f:
                    key = load_pem_public_key(f.read())
            except OSError as exc:
                raise ValueError(f"token_public_key {public_key_path}: {exc.strerror or exc}") from None
            except (ValueError, TypeError) as exc:
                raise ValueError(f"token_public_key {public_key_path}: not a PEM public key ({exc})") from None
            try:
                _alg_of(key)
            except ValueError as exc:
                raise ValueError(f"token_public_key {public_key_path}: {exc}") from None
        jwks: dict[str, Any] = {}
        if jwks_path:
            jwks = _load_jwks(jwks_path)
        return cls(secret, key, jwks, algorithms)

    def verify(self, token: str, now: float | None = None) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(Close.AUTH_FAILED, "invalid token") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthError(Close.AUTH_FAILED, "token algorithm not accepted")
        key = self._key(alg, header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                # with the server's clock given, chatd checks the times itself against it
                options={
                    "require": ["exp", "sub"],
                    "verify_exp": now is None,
                    "verify_nbf": now is None,
                    "verify_iat": now is None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(Close.TOKEN_EXPIRED, "token expired") from None
        except jwt.PyJWTError:
            raise AuthError(Close.AUTH_FAILED, "invalid token") from None
        return _identity(claims, now)

    def _key(self, alg: str, kid: Any) -> Any:
        if alg == "HS256":
            return self.secret
        if self.jwks:
            if kid is None:
                candidates = [k for k in self.jwks.values() if k.algorithm_name == alg]
                if len(candidates) == 1:
                    return candidates[0].key
            elif isinstance(kid, str) and kid in self.jwks and self.jwks[kid].algorithm_name == alg:
                return self.jwks[kid].key
            if self.public_key is None or _alg_of(self.public_key) != alg:
                raise AuthError(Close.AUTH_FAILED, "no key for this token")
        if self.public_key is not None and _alg_of(self.public_key) == alg:
            return self.public_key
        raise AuthError(Close.AUTH_FAILED, "no key for this token")


def _alg_of(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"an RSA key of {key.key_size} bits is too weak (2048 at least)")
        return "RS256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError("only RSA (RS256) and Ed25519 (EdDSA) public keys are supported")


def _load_jwks(path: str) -> dict[str, Any]:
    import json

    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except OSError as exc:
        raise ValueError(f"token_jwks {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ValueError(f"token_jwks {path}: not JSON") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys or len(keys) > 64:
        raise ValueError(f"token_jwks {path}: needs a 'keys' list of 1 to 64 public keys")
    out: dict[str, Any] = {}
    for i, jwk in enumerate(keys):
        if not isinstance(jwk, dict) or "d" in jwk:  # "d": a private key has no place here
            raise ValueError(f"token_jwks {path}: key {i} is not a public JWK")
        try:
            key = jwt.PyJWK.from_dict(jwk)
            if key.algorithm_name not in ("RS256", "EdDSA"):
                raise ValueError(f"algorithm {key.algorithm_name} is not supported")
            _alg_of(key.key)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise ValueError(f"token_jwks {path}: key {i}: {exc}") from None
        kid = jwk.get("kid") or f"#{i}"
        if kid in out:
            raise ValueError(f"token_jwks {path}: two keys with kid {kid!r}")
        out[kid] = key
    return out


def _identity(claims: dict[str, Any], now: float | None) -> Identity:
    exp = claims["exp"]
    # comparisons, not float(): an int of 400 digits has no float, NaN compares False
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not exp <= MAX_EXP or exp != exp:
        raise AuthError(Close.AUTH_FAILED, "invalid expiry")
    if now is not None and exp <= now:
        raise AuthError(Close.TOKEN_EXPIRED, "token expired")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not -MAX_EXP <= value <= MAX_EXP:
            raise AuthError(Close.AUTH_FAILED, f"invalid {name}")  # NaN and infinities fail the comparison too
        if now is not None and value > now + CLOCK_SKEW_S:  # not valid yet, or issued in the future
            raise AuthError(Close.AUTH_FAILED, f"token {name} is in the future")
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
        exp=int(exp),
        scopes=_scopes(claims.get("scope", []), str(typ)),
        iat=int(claims.get("iat") or 0),
    )


def _scopes(value: Any, typ: str) -> tuple[str, ...]:
    """A token's ``scope`` claim: a list of known scopes. Anything else refuses
    the token: a typo must not quietly hand out less (or more) than meant."""
    if not isinstance(value, list) or len(value) > len(TOKEN_SCOPES):
        raise AuthError(Close.AUTH_FAILED, "scope must be a list")
    if not all(isinstance(v, str) and v in TOKEN_SCOPES for v in value) or len(set(value)) != len(value):
        raise AuthError(Close.AUTH_FAILED, "scope may hold only " + ", ".join(TOKEN_SCOPES) + ", once")
    if value and typ != "bot":  # a backend is a bot; a person's token never acts as one
        raise AuthError(Close.AUTH_FAILED, "the admin scope is for backends: their tokens have typ bot")
    return tuple(value)
