"""Token verification (HS256 pinned) and the refusal to serve off loopback with the dev secret."""

from __future__ import annotations

import base64
import json
import time
import warnings
from typing import Any

import jwt
import pytest
from chatd_protocol import Close

from chatd.app import App
from chatd.auth import AuthError, make_token, verify_token
from chatd.config import DEV_SECRET, Config

OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256"


def claims(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "sub": "alice",
        "name": "Alice",
        "typ": "owner",
        "badges": ["EP Club"],
        "roles": [],
        "exp": int(time.time()) + 600,
    }
    for k, v in over.items():
        if v is ...:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def sign(payload: dict[str, Any], key: str = DEV_SECRET, alg: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short keys for HS512 warn; that is the point of the test
        return jwt.encode(payload, key, algorithm=alg)


def b64(obj: Any) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def refused(token: str, code: Close = Close.AUTH_FAILED) -> None:
    with pytest.raises(AuthError) as info:
        verify_token(token, DEV_SECRET)
    assert info.value.code == code


def test_valid_token() -> None:
    ident = verify_token(make_token("alice", "staff", name="Alice", badges=["b"], roles=["fellow"]), DEV_SECRET)
    assert (ident.id, ident.name, ident.type, ident.badges, ident.roles) == ("alice", "Alice", "staff", ("b",), ("fellow",))
    assert ident.is_staff
    assert ident.user() == {"id": "alice", "name": "Alice", "type": "staff", "badges": ["b"], "roles": ["fellow"]}
    # name defaults to the user id
    assert verify_token(sign(claims(name=...)), DEV_SECRET).name == "alice"


def test_expired() -> None:
    refused(sign(claims(exp=int(time.time()) - 10)), Close.TOKEN_EXPIRED)
    refused(make_token("alice", "owner", ttl=-5), Close.TOKEN_EXPIRED)


def test_forged_signature() -> None:
    refused(sign(claims(), key=OTHER_SECRET))
    good = make_token("alice", "owner")
    head, payload, sig = good.split(".")
    refused(f"{head}.{payload}.{sig[:-2]}AA")
    # payload swapped under a valid signature
    refused(f"{head}.{b64(claims(sub='mallory'))}.{sig}")


def test_alg_none() -> None:
    refused(f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.")
    refused(f"{b64({'alg': 'None'})}.{b64(claims())}.")


def test_other_algorithms_are_refused_even_with_the_right_key() -> None:
    refused(sign(claims(), alg="HS512"))
    refused(sign(claims(), alg="HS384"))
    # an asymmetric header (the key-confusion attack) signed with the HMAC secret
    import hashlib
    import hmac

    signing_input = f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims())}"
    mac = hmac.new(DEV_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    refused(f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}")
    refused(f"{b64({'alg': 'ES256'})}.{b64(claims())}.c2ln")


def test_missing_exp_or_sub() -> None:
    refused(sign(claims(exp=...)))
    refused(sign(claims(sub=...)))


@pytest.mark.parametrize("exp", ["tomorrow", None, [1]])
def test_bad_exp(exp: Any) -> None:
    refused(sign(claims(exp=exp)))


@pytest.mark.parametrize("sub", ["", "a b", "x" * 65, "ü", "a/b", 5, None, ["alice"], "alice\n"])
def test_bad_sub(sub: Any) -> None:
    refused(sign(claims(sub=sub)))


@pytest.mark.parametrize("typ", ["admin", "", None, 1, "Owner", ...])
def test_bad_typ(typ: Any) -> None:
    refused(sign(claims(typ=typ)))


@pytest.mark.parametrize(
    "over",
    [
        {"name": ""},
        {"name": "n" * 65},
        {"name": 5},
        {"badges": "EP Club"},
        {"badges": [1]},
        {"badges": [""]},
        {"badges": ["b"] * 33},
        {"roles": {"fellow": True}},
        {"roles": ["r" * 65]},
    ],
)
def test_bad_profile_claims(over: dict[str, Any]) -> None:
    refused(sign(claims(**over)))


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJIUzI1NiJ9.e30.sig"])
def test_malformed(token: str) -> None:
    refused(token)


def test_make_token_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        make_token("a b", "owner")
    with pytest.raises(ValueError):
        make_token("alice", "admin")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.com", "192.168.1.1"])
def test_dev_secret_refused_off_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="development secret"):
        Config(host=host).check()
    with pytest.raises(ValueError):
        App(Config(host=host, port=0))
    Config(host=host, secret=OTHER_SECRET).check()  # a real secret may serve anywhere


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_dev_secret_allowed_on_loopback(host: str) -> None:
    Config(host=host).check()


def test_bad_sync_mode_refused() -> None:
    with pytest.raises(ValueError):
        Config(sync="off").check()


def test_negative_points_yield_refused() -> None:
    with pytest.raises(ValueError, match="points-yield-ms"):
        Config(points_yield_ms=-1).check()
    Config(points_yield_ms=0).check()


def test_custom_secret_is_the_only_one_accepted() -> None:
    tok = make_token("alice", "owner", secret=OTHER_SECRET)
    assert verify_token(tok, OTHER_SECRET).id == "alice"
    with pytest.raises(AuthError):
        verify_token(tok, DEV_SECRET)
    with pytest.raises(AuthError):
        verify_token(make_token("alice", "owner"), OTHER_SECRET)


# -- the server clock's now (the session passes its Clock's wall time) -----------


def test_expiry_is_judged_on_the_given_clock() -> None:
    exp = int(time.time()) - 3600  # long expired by the system clock
    tok = sign(claims(exp=exp))
    assert verify_token(tok, DEV_SECRET, now=exp - 1).id == "alice"
    with pytest.raises(AuthError) as info:
        verify_token(tok, DEV_SECRET, now=exp)  # expired at exp itself
    assert info.value.code == Close.TOKEN_EXPIRED
    refused(tok, Close.TOKEN_EXPIRED)  # without a clock: the system's


def test_make_token_issues_at_the_given_now() -> None:
    now = 1_763_900_000
    ident = verify_token(make_token("alice", "owner", ttl=60, now=now), DEV_SECRET, now=now + 59)
    assert ident.exp == now + 60


@pytest.mark.parametrize("exp", ["tomorrow", None, [1], True])
def test_bad_exp_with_a_clock(exp: Any) -> None:
    with pytest.raises(AuthError) as info:
        verify_token(sign(claims(exp=exp)), DEV_SECRET, now=time.time())
    assert info.value.code == Close.AUTH_FAILED


@pytest.mark.parametrize("exp", [float("nan"), float("inf")])
def test_non_finite_exp_with_a_clock_is_refused_like_without(exp: float) -> None:
    tok = sign(claims(exp=exp))
    refused(tok)
    with pytest.raises(AuthError) as info:
        verify_token(tok, DEV_SECRET, now=time.time())
    assert info.value.code == Close.AUTH_FAILED


@pytest.mark.parametrize("db", ["redis://x", "mysql://u@h/db", "postgres-ish://h/db"])
def test_a_store_url_of_an_engine_this_server_lacks_is_refused(db: str) -> None:
    with pytest.raises(ValueError, match="not supported"):
        Config(db_path=db).check()
    Config(db_path="sqlite:/tmp/chatd.db").check()
    Config(db_path="chatd.db").check()
    Config(db_path="postgresql://chatd@localhost:5432/chatd").check()
    Config(db_path="postgres://chatd@db.internal/chatd").check()


@pytest.mark.parametrize(
    ("db", "says"),
    [
        ("postgresql:///chatd", "needs a host"),
        ("postgresql://chatd@localhost:port/chatd", "not a PostgreSQL URL"),
        ("postgresql://chatd@localhost:99999/chatd", "not a PostgreSQL URL"),
    ],
)
def test_a_malformed_postgresql_url_is_refused_at_config_check(db: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Config(db_path=db).check()
