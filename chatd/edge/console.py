"""The web console on the main port (issue 15, docs/console.md).

``/console/`` serves the console's files, shipped inside the package
(``chatd/console/``, read once when the server starts); the page speaks
``chatd.v1.json`` to the same origin. While the server checks tokens with the
development secret, which the config allows on loopback only, ``/console/dev-token``
signs a token for the user and type a developer picks; with any real key it is 404.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from urllib.parse import parse_qs

import orjson
from chatd_protocol.ops import USER_TYPES
from websockets.http11 import Response

from ..auth import make_token
from .http import Route, respond

FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
# the page loads nothing but its own files and talks to nothing but its own origin
HEADERS = (
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
    ),
)
MAX_QUERY = 512
DEV_FIELDS = {"user", "type", "name", "roles"}
DEV_TTL = 86400
MAX_NAME = 64
MAX_ROLES = 8


def _error(status: int, message: str) -> Response:
    return respond(status, orjson.dumps({"error": message}) + b"\n", "application/json", HEADERS)


def console_routes(dev: bool, now_ms: Callable[[], int]) -> dict[str, Route]:
    """The console's routes; ``dev``: the server runs on the development secret."""
    package = resources.files("chatd.console")
    files = {name: package.joinpath(name).read_bytes() for name in FILES}

    def serve(name: str) -> Route:
        body, content_type = files[name], FILES[name]
        return lambda _query: respond(200, body, content_type, HEADERS)

    def to_slash(_query: str) -> Response:
        response = respond(308, b"/console/\n")
        response.headers["Location"] = "/console/"
        return response

    def dev_token(query: str) -> Response:
        if not dev:
            return respond(404, b"not found\n")
        if len(query) > MAX_QUERY:
            return _error(400, f"the query is over {MAX_QUERY} bytes")
        try:
            args = parse_qs(query, strict_parsing=True, max_num_fields=len(DEV_FIELDS)) if query else {}
        except ValueError as exc:
            return _error(400, f"not a query string: {exc}")
        unknown = set(args) - DEV_FIELDS
        if unknown:
            return _error(400, "unknown field " + ", ".join(sorted(unknown)))
        if any(len(values) != 1 for values in args.values()):
            return _error(400, "each field once")
        user, typ = args.get("user", [""])[0], args.get("type", ["owner"])[0]
        name = args.get("name", [""])[0] or None
        if typ not in USER_TYPES:
            return _error(400, "type must be one of " + ", ".join(USER_TYPES))
        if name is not None and (len(name) > MAX_NAME or not name.isprintable()):
            return _error(400, f"name must be 1-{MAX_NAME} printable characters")
        roles = [r for r in args.get("roles", [""])[0].split(",") if r]
        if len(roles) > MAX_ROLES or any(not (r.isascii() and r.isalpha() and len(r) <= 32) for r in roles):
            return _error(400, f"roles: at most {MAX_ROLES} comma-separated words of letters")
        issued = now_ms() // 1000
        try:
            token = make_token(user, typ, name=name, roles=roles, ttl=DEV_TTL, now=issued)
        except ValueError as exc:  # the user id
            return _error(400, str(exc))
        return respond(200, orjson.dumps({"token": token, "exp": issued + DEV_TTL}) + b"\n", "application/json", HEADERS)

    routes: dict[str, Route] = {f"/console/{name}": serve(name) for name in FILES}
    routes["/console/"] = routes["/console/index.html"]
    routes["/console"] = to_slash
    routes["/console/dev-token"] = dev_token
    return routes
