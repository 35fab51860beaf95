"""Asymmetric tokens (issue 10, item 15): RS256 and EdDSA verified with a public
key or a JWKS, algorithms pinned, keys never used for what they are not, absurd
claims refused."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from chatd_protocol import Close
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from chatd.auth import AuthError, Verifier
from chatd.config import DEV_SECRET, Config

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED = ed25519.Ed25519PrivateKey.generate()
OTHER_ED = ed25519.Ed25519PrivateKey.generate()


def pem(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def claims(**over: Any) -> dict[str, Any]:
    return {"sub": "alice", "typ": "owner", "exp": int(time.time()) + 600, **over}


def sign(key: Any, alg: str, kid: str | None = None, **over: Any) -> str:
    return jwt.encode(claims(**over), key, algorithm=alg, headers={"kid": kid} if kid else None)


def refused(v: Verifier, token: str, code: Close = Close.AUTH_FAILED) -> str:
    with pytest.raises(AuthError) as info:
        v.verify(token, time.time())
    assert info.value.code == code
    return info.value.reason


def write(tmp: Path, name: str, data: bytes | str) -> str:
    path = tmp / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def jwks(tmp: Path, **keys: Any) -> str:
    out = []
    for kid, private in keys.items():
        alg = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "EdDSA"
        algo = jwt.get_algorithm_by_name(alg)
        jwk = json.loads(algo.to_jwk(private.public_key()))
        out.append({**jwk, "kid": kid, "alg": alg})
    return write(tmp, "jwks.json", json.dumps({"keys": out}))


def test_rs256_and_eddsa_with_a_public_key(tmp_path: Path) -> None:
    rs = Verifier.from_files(None, write(tmp_path, "rsa.pem", pem(RSA)), None, ())
    assert rs.verify(sign(RSA, "RS256"), time.time()).id == "alice"
    ed = Verifier.from_files(None, write(tmp_path, "ed.pem", pem(ED)), None, ())
    assert ed.verify(sign(ED, "EdDSA"), time.time()).id == "alice"
    assert "not accepted" in refused(ed, sign(RSA, "RS256"))  # another algorithm than configured
    refused(ed, sign(OTHER_ED, "EdDSA"))  # the right algorithm, another key
    assert "not accepted" in refused(ed, jwt.encode(claims(), DEV_SECRET, algorithm="HS256"))  # no secret configured


def test_a_public_key_is_never_an_hmac_secret(tmp_path: Path) -> None:
    """The classic confusion: an HS256 token signed with the RS256 public key as the secret."""
    rs = Verifier.from_files("a-real-secret-of-32-bytes-or-more!", write(tmp_path, "rsa.pem", pem(RSA)), None, ())
    refused(rs, jwt.encode(claims(), None, algorithm="none"))  # alg none
    import hashlib
    import hmac

    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    sig = hmac.new(pem(RSA), header + b"." + body, hashlib.sha256).digest()
    refused(rs, (header + b"." + body + b"." + jwt.utils.base64url_encode(sig)).decode())


def test_a_jwks_chooses_the_key_by_kid(tmp_path: Path) -> None:
    v = Verifier.from_files(None, None, jwks(tmp_path, k1=RSA, k2=ED), ())
    assert v.verify(sign(RSA, "RS256", "k1"), time.time()).id == "alice"
    assert v.verify(sign(ED, "EdDSA", "k2"), time.time()).id == "alice"
    refused(v, sign(ED, "EdDSA", "k1"))  # the kid of an RSA key on an EdDSA token
    refused(v, sign(OTHER_ED, "EdDSA", "k2"))  # the right kid, signed by another key
    assert "no key" in refused(v, sign(ED, "EdDSA", "k9"))  # an unknown kid
    assert v.verify(sign(RSA, "RS256"), time.time()).id == "alice"  # no kid: the one key of that algorithm


def test_algorithms_are_pinned(tmp_path: Path) -> None:
    keys = jwks(tmp_path, k1=RSA, k2=ED)
    only_ed = Verifier.from_files(None, None, keys, ("EdDSA",))
    assert "not accepted" in refused(only_ed, sign(RSA, "RS256", "k1"))
    assert only_ed.verify(sign(ED, "EdDSA", "k2"), time.time())
    with pytest.raises(ValueError, match="not supported"):
        Verifier.from_files(None, None, keys, ("ES256",))
    with pytest.raises(ValueError, match="no key"):
        Verifier.from_files(None, None, keys, ("HS256",))


def test_absurd_claims_are_refused(tmp_path: Path) -> None:
    v = Verifier.from_files(None, write(tmp_path, "ed.pem", pem(ED)), None, ())
    now = int(time.time())
    assert "expiry" in refused(v, sign(ED, "EdDSA", exp=10**400))
    assert "future" in refused(v, sign(ED, "EdDSA", iat=now + 86_400))
    assert "future" in refused(v, sign(ED, "EdDSA", nbf=now + 3600))
    assert "invalid iat" in refused(v, sign(ED, "EdDSA", iat="yesterday"))
    assert v.verify(sign(ED, "EdDSA", iat=now - 10, nbf=now - 10), time.time())
    refused(v, sign(ED, "EdDSA", exp=now - 1), Close.TOKEN_EXPIRED)


@pytest.mark.parametrize(
    ("name", "data", "why"),
    [
        ("empty.pem", b"", "not a PEM public key"),
        ("garbage.pem", b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
        ("private.pem", b"", "not a PEM public key"),
        ("weak.pem", b"", "too weak"),
    ],
)
def test_bad_public_key_files_are_refused(tmp_path: Path, name: str, data: bytes, why: str) -> None:
    if name == "private.pem":  # a private key where a public one belongs
        data = ED.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    if name == "weak.pem":
        data = pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ValueError, match=why):
        Verifier.from_files(None, write(tmp_path, name, data), None, ())
    with pytest.raises(ValueError, match="No such file"):
        Verifier.from_files(None, str(tmp_path / "missing.pem"), None, ())


@pytest.mark.parametrize(
    "doc",
    ["not json", "[]", '{"keys": []}', '{"keys": [1]}', '{"keys": [{"kty": "RSA"}]}', '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'],
)
def test_bad_jwks_files_are_refused(tmp_path: Path, doc: str) -> None:
    with pytest.raises(ValueError, match="token_jwks"):
        Verifier.from_files(None, None, write(tmp_path, "jwks.json", doc), ())


def test_a_jwks_with_a_private_key_is_refused(tmp_path: Path) -> None:
    jwk = json.loads(jwt.get_algorithm_by_name("EdDSA").to_jwk(ED))  # the private key's JWK has "d"
    with pytest.raises(ValueError, match="not a public JWK"):
        Verifier.from_files(None, None, write(tmp_path, "j.json", json.dumps({"keys": [jwk]})), ())


def test_a_public_key_lets_the_server_leave_loopback(tmp_path: Path) -> None:
    key = write(tmp_path, "ed.pem", pem(ED))
    Config(host="0.0.0.0", token_public_key=key).check()
    with pytest.raises(ValueError, match="development secret"):
        Config(host="0.0.0.0").check()
    assert Config(token_public_key=key).signing_secret is None  # no development secret beside a real key


async def test_a_server_with_a_public_key_accepts_only_its_tokens(
    make_server: Any, clients: Any, tmp_path: Path
) -> None:
    app = await make_server(token_public_key=write(tmp_path, "ed.pem", pem(ED)))
    c = await clients(app, None)
    reply = await c.call("auth", token=sign(ED, "EdDSA", name="Alice"))
    assert reply["user"]["id"] == "alice"
    dev = await clients(app, None)
    await dev.send_frame({"id": 1, "op": "auth", "d": {"token": jwt.encode(claims(), DEV_SECRET, algorithm="HS256")}})
    assert await dev.closed() == 4101
