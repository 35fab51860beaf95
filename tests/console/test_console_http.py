"""The web console's routes on the main port (chatd/edge/console.py), against a real
server: its files, and the development token, with what a caller may send wrong."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import jwt
import orjson
import pytest
from support import url
from wsclient import WsClient

from chatd.app import App
from chatd.config import DEV_SECRET


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP GET: (status, headers with lower-case names, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/console/", "text/html; charset=utf-8", b'<script src="console.js"'),
        ("/console/index.html", "text/html; charset=utf-8", b"<main"),
        ("/console/console.js", "text/javascript; charset=utf-8", b"chatd.v1.json"),
        ("/console/console.css", "text/css; charset=utf-8", b"#messages"),
    ],
)
async def test_the_console_files_are_served_with_their_types_and_a_strict_policy(
    server: App, path: str, content_type: str, marker: bytes
) -> None:
    status, headers, body = await get(server.port, path)
    assert status == 200 and headers["content-type"] == content_type and marker in body
    assert int(headers["content-length"]) == len(body)
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


async def test_console_without_its_slash_is_sent_to_it(server: App) -> None:
    status, headers, _ = await get(server.port, "/console")
    assert status == 308 and headers["location"] == "/console/"


@pytest.mark.parametrize(
    "path",
    ["/console/nope.js", "/console/../chatd/config.py", "/console/%2e%2e/pyproject.toml", "/console/__init__.py",
     "/console//index.html", "/console/index.html/"],
)
async def test_nothing_else_under_console_is_a_file(server: App, path: str) -> None:
    status, _, body = await get(server.port, path)
    assert status != 200 and b"import" not in body and b"[project]" not in body  # the WebSocket handshake refuses it


async def test_a_development_token_is_signed_for_the_chosen_user_and_signs_in(server: App) -> None:
    status, headers, body = await get(server.port, "/console/dev-token?user=alice&type=staff&name=" + quote("王小明")
                                      + "&roles=fellow,engineer")
    assert status == 200 and headers["content-type"] == "application/json"
    out = orjson.loads(body)
    claims = jwt.decode(out["token"], DEV_SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["typ"], claims["name"], claims["roles"]) == ("alice", "staff", "王小明", ["fellow", "engineer"])
    assert claims["exp"] == out["exp"] == claims["iat"] + 86400
    client = await WsClient.connect(url(server), "json")
    try:
        assert (await client.auth(out["token"]))["user"]["id"] == "alice"
    finally:
        await client.close()
    _, _, body = await get(server.port, "/console/dev-token?user=bob")  # the type defaults to owner
    assert jwt.decode(orjson.loads(body)["token"], DEV_SECRET, algorithms=["HS256"])["typ"] == "owner"


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("", "user id"),  # no user
        ("probe", "not a query string"),
        ("user=", "user id"),  # an empty one
        ("user=al%20ice", "user id"),
        ("user=" + "a" * 65, "user id"),
        ("user=alice&type=admin", "type must be"),
        ("user=alice&type=owner&type=fan", "each field once"),
        ("user=alice&scope=admin", "unknown field"),
        ("user=alice&name=" + "x" * 65, "name must be"),
        ("user=alice&name=%00evil", "name must be"),
        ("user=alice&roles=fellow,rm%20-rf", "roles"),
        ("user=alice&roles=" + ",".join("r" for _ in range(9)), "roles"),
        ("user=alice&name=" + "y" * 600, "over 512 bytes"),
        ("user=a&user=b&user=c&user=d&user=e", "not a query string"),  # more fields than there are
    ],
)
async def test_a_development_token_request_with_garbage_says_what_is_wrong(server: App, query: str, says: str) -> None:
    status, headers, body = await get(server.port, "/console/dev-token?" + query if query else "/console/dev-token")
    assert status == 400 and headers["content-type"] == "application/json"
    assert says in orjson.loads(body)["error"]


async def test_with_a_real_key_there_is_no_development_token(make_server: Any) -> None:
    app = await make_server(secret="a-production-secret-of-enough-length-0123456789")
    status, _, body = await get(app.port, "/console/dev-token?user=alice&type=staff")
    assert status == 404 and b"token" not in body
    status, _, _ = await get(app.port, "/console/")  # the console itself is there
    assert status == 200
