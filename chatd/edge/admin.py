"""The admin API: the backends' HTTP listener (docs/admin-api.md).

``POST /v1/<op>`` with a JSON object body (the op's ``d``) and
``Authorization: Bearer <token>``, where the token holds the ``admin`` scope.
It runs the same :meth:`Ops.run` a socket's request runs, with a caller that
has no socket, so an op behaves and refuses alike on both. Only ops that need
the admin scope are served here; the user ops are the sockets'.

aiohttp, not websockets' HTTP side, which reads no request body: it reads the
body with a size limit, runs on our event loop (the op is a plain await, no
thread or process hop), and is maintained by aio-libs.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import ClientError, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from chatd_protocol import ADMIN_API_OPS, Err, RequestError, Scope

from ..auth import AuthError, Verifier
from ..clock import Clock
from ..core.caller import Caller
from ..core.users import UserBook
from ..ops import Ops
from ..store import StoreUnavailable

log = logging.getLogger("chatd.admin")

PREFIX = "/v1/"

#: The HTTP status of each error code.
STATUS: dict[Err, int] = {
    Err.BAD_REQUEST: 400,
    Err.TOO_LONG: 400,
    Err.UNAUTHORIZED: 401,
    Err.FORBIDDEN: 403,
    Err.NOT_MEMBER: 403,
    Err.BLOCKED: 403,
    Err.MUTED: 403,
    Err.NOT_FOUND: 404,
    Err.UNKNOWN_OP: 404,
    Err.CONFLICT: 409,
    Err.ALREADY_AUTHENTICATED: 409,
    Err.RECALL_WINDOW: 409,
    Err.LIMIT: 409,
    Err.INSUFFICIENT: 409,
    Err.RATE_LIMITED: 429,
    Err.INTERNAL: 500,
    Err.UNAVAILABLE: 503,
}

ADMIN_OPS = ADMIN_API_OPS  # the admin scope's ops, and the user ops a backend may run (Rule.backend)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


class TooLarge(RequestError):
    """A body over the limit: ``bad_request``, with HTTP status 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(Err.BAD_REQUEST, f"the body is over {limit} bytes")


def _refusal(exc: RequestError) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="chatd"'} if exc.code is Err.UNAUTHORIZED else None
    if exc.retry_after_ms is not None:
        headers = {"Retry-After": str(max(1, -(-exc.retry_after_ms // 1000)))}
    status = 413 if isinstance(exc, TooLarge) else STATUS.get(exc.code, 400)
    return _json(status, {"error": exc.wire()}, headers)


async def _no_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.popall("Server", None)  # which library and version we run is nobody's business


class AdminServer:
    def __init__(
        self,
        ops: Ops,
        verifier: Verifier,
        users: UserBook,
        clock: Clock,
        host: str,
        port: int,
        max_body: int,
        reuse_port: bool = False,
    ) -> None:
        self.ops = ops
        self.verifier = verifier
        self.users = users
        self.clock = clock
        self.host = host
        self.port = port
        self.max_body = max_body
        self.reuse_port = reuse_port  # --workers: every worker listens on the one admin port
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; returns the port (the kernel's pick when configured 0)."""
        app = web.Application(client_max_size=self.max_body, handler_args={"max_field_size": 16384})
        app.router.add_route("*", "/{path:.*}", self._handle)
        app.on_response_prepare.append(_no_server_header)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, self.host, self.port, reuse_address=True, reuse_port=self.reuse_port or None, backlog=1024
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            op = self._op(request)
            caller = await self._caller(request)
            d = await self._body(request)
            reply = await self.ops.run(caller, op, d)
        except RequestError as exc:
            log.debug("admin %s %s: %s", request.method, request.path[:80], exc.code.value)
            return _refusal(exc)
        except Exception:  # a bug: answered like any other error, details in the log only
            log.exception("admin %s %s failed", request.method, request.path[:80])
            return _refusal(RequestError(Err.INTERNAL, "internal error"))
        log.debug("admin %s by %s: ok", op, caller.user)
        if "csv" in reply and "text/csv" in request.headers.get("Accept", ""):  # a report, for a spreadsheet
            return web.Response(status=200, body=reply["csv"].encode(), content_type="text/csv", charset="utf-8")
        return _json(200, {"ok": reply})

    @staticmethod
    def _op(request: web.Request) -> str:
        path = request.path
        op = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
        if op not in ADMIN_OPS:
            raise RequestError(Err.UNKNOWN_OP, f"no admin op at {path[:80]!r} (POST /v1/<op>)")
        if request.method != "POST":
            raise RequestError(Err.BAD_REQUEST, f"{request.method[:16]} is not accepted: POST a JSON object")
        return op

    async def _caller(self, request: web.Request) -> Caller:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RequestError(Err.UNAUTHORIZED, "needs Authorization: Bearer <token with the admin scope>")
        try:
            identity = self.verifier.verify(token.strip(), self.clock.wall_ms() / 1000)
        except AuthError as exc:
            raise RequestError(Err.UNAUTHORIZED, f"token refused: {exc.reason}") from None
        if identity.iat < await self._revoked_before(identity.id):  # a kick closes sockets, not requests
            raise RequestError(Err.UNAUTHORIZED, "token refused: revoked")
        caller = Caller.of(identity)
        if Scope.ADMIN not in caller.scopes:
            raise RequestError(Err.FORBIDDEN, "the token lacks the admin scope")
        return caller

    async def _revoked_before(self, user: str) -> int:
        try:
            return (await self.users.sign_outs(user))[0]
        except StoreUnavailable:
            raise RequestError(Err.UNAVAILABLE, "the store is unavailable; retry") from None

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise TooLarge(self.max_body) from None
        except (RequestPayloadError, ClientError, HttpProcessingError, ValueError):  # a broken encoding, cut short
            raise RequestError(Err.BAD_REQUEST, "the body could not be read") from None
        if not raw.strip():
            return {}
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RequestError(Err.BAD_REQUEST, "the body is not JSON") from None
        if not isinstance(d, dict):
            raise RequestError(Err.BAD_REQUEST, "the body must be a JSON object (the op's arguments)")
        return d
