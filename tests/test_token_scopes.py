"""A token's ``scope`` claim: ``["admin"]`` makes a backend's token hold the
``admin`` scope (the admin ops of docs/service-groups.md take it); anything
else in the claim refuses the token. ``chatd token --scope admin`` mints one."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from chatd_protocol import Close, Scope
from support import url
from wsclient import WsClient

from chatd.auth import AuthError, Verifier, make_token
from chatd.cli import main
from chatd.config import DEV_SECRET
from chatd.core.caller import Caller

V = Verifier(secret=DEV_SECRET)


def signed(**over: Any) -> str:
    claims = {"sub": "crm", "typ": "bot", "exp": int(time.time()) + 600, **over}
    return jwt.encode(claims, DEV_SECRET, algorithm="HS256")


def test_an_admin_token_holds_the_admin_scope_besides_its_types() -> None:
    identity = V.verify(make_token("crm", "bot", scopes=["admin"]), time.time())
    assert identity.scopes == ("admin",)
    assert Caller.of(identity).scopes == {Scope.USER, Scope.BOT, Scope.ADMIN}


def test_a_token_without_the_claim_holds_no_admin_scope() -> None:
    for typ in ("owner", "staff", "bot"):
        identity = V.verify(make_token("alice", typ), time.time())
        assert identity.scopes == () and Scope.ADMIN not in Caller.of(identity).scopes


@pytest.mark.parametrize(
    "scope",
    ["admin", ["root"], ["admin", "admin"], [1], [None], {"admin": True}, ["admin", "x"], [["admin"]], ["ADMIN"], 7],
)
def test_anything_else_in_the_claim_refuses_the_token(scope: Any) -> None:
    with pytest.raises(AuthError) as info:
        V.verify(signed(scope=scope), time.time())
    assert info.value.code == Close.AUTH_FAILED and "scope" in info.value.reason


@pytest.mark.parametrize("typ", ["fan", "deposit", "owner", "staff"])
def test_the_admin_scope_on_a_persons_token_refuses_it(typ: str) -> None:
    """A backend's token is a bot's: a person's token with the scope is an issuer's mistake."""
    with pytest.raises(AuthError) as info:
        V.verify(signed(scope=["admin"], typ=typ), time.time())
    assert info.value.code == Close.AUTH_FAILED and "backends" in info.value.reason
    with pytest.raises(ValueError, match="backends"):
        make_token("alice", typ, scopes=["admin"])


@pytest.mark.parametrize("iat", [float("-inf"), float("inf"), float("nan"), -(10**400)])
def test_an_iat_that_is_no_time_refuses_the_token(iat: Any) -> None:
    with pytest.raises(AuthError) as info:
        V.verify(signed(iat=iat), time.time())
    assert info.value.code == Close.AUTH_FAILED


def test_make_token_refuses_an_unknown_scope() -> None:
    with pytest.raises(ValueError, match="scope must be one of admin"):
        make_token("crm", "bot", scopes=["root"])


def test_chatd_token_scope_admin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--user", "crm", "--type", "bot", "--scope", "admin"]) == 0
    token = capsys.readouterr().out.strip()
    assert V.verify(token, time.time()).scopes == ("admin",)
    with pytest.raises(SystemExit) as info:  # argparse refuses what it does not know
        main(["token", "--user", "crm", "--type", "bot", "--scope", "root"])
    assert info.value.code == 2
    assert "invalid choice: 'root'" in capsys.readouterr().err


async def test_an_admin_token_authenticates_on_the_socket(server: Any, clients: Any) -> None:
    c = await WsClient.connect(url(server), "json")
    reply = await c.auth(make_token("crm", "bot", scopes=["admin"]))
    assert reply["user"]["id"] == "crm"
    await c.close()
    bad = await WsClient.connect(url(server), "json")
    await bad.send_frame({"id": 1, "op": "auth", "d": {"token": signed(scope=["root"])}})
    assert await bad.closed() == 4101
