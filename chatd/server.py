"""The socket server: WebSocket on any path, ``GET /healthz`` and ``GET /metrics``
on the same port, subprotocol negotiation, graceful drain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from chatd_protocol import JSON, MSGPACK, Close
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from .conn import ChatdConnection
from .metrics import CONTENT_TYPE_LATEST
from .ops import FAST, HANDLERS
from .services import Services

log = logging.getLogger("chatd.server")


class SocketServer:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.server: Server | None = None
        self.ready = False

    async def start(self) -> int:
        cfg = self.svc.config
        connection_class = type(
            "ChatdConnection", (ChatdConnection,), {"svc": self.svc, "handlers": HANDLERS, "fast": FAST}
        )
        self.server = await serve(
            self._handler,
            cfg.host,
            cfg.port,
            subprotocols=[Subprotocol(MSGPACK), Subprotocol(JSON)],
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            compression=None,
            max_size=cfg.max_frame,
            ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_interval,
            close_timeout=2,
            server_header="chatd",
            reuse_address=True,
            reuse_port=cfg.reuse_port or None,
            create_connection=connection_class,
        )
        self.ready = True
        sock = next(iter(self.server.sockets))
        return int(sock.getsockname()[1])

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            if not self.ready or self.svc.draining:
                return conn.respond(503, "not ready\n")
            if not self.svc.bus.up:
                return conn.respond(503, "not ready: bus down\n")
            return conn.respond(200, "ok\n")
        if path == "/metrics":
            body = self.svc.metrics.render()
            headers = Headers([("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
            return Response(200, "OK", headers, body)
        if self.svc.draining:
            return conn.respond(503, "draining\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, ChatdConnection)
        conn = ws.attach()
        if conn is None:
            self.svc.metrics.closes.labels(str(Close.UNSUPPORTED_SUBPROTOCOL.value)).inc()
            await ws.close(Close.UNSUPPORTED_SUBPROTOCOL, "offer chatd.v1.msgpack or chatd.v1.json")
            return
        # The handshake's headers (~3 KB) are not needed once the socket is open;
        # websockets would keep them for the socket's lifetime.
        if ws.request is not None:
            ws.request.headers.clear()
        if ws.response is not None:
            ws.response.headers.clear()
        await conn.serve()

    async def drain(self) -> None:
        """Graceful shutdown: stop accepting, let committed writes be acked and
        pushed, then close every socket with 4000 (reconnect)."""
        self.svc.draining = True
        if self.server is None:
            return
        self.server.close(close_connections=False)
        try:
            await asyncio.wait_for(self.svc.pipeline.drain(), self.svc.config.drain_timeout)
        except TimeoutError:
            log.warning("store did not drain within %.1fs", self.svc.config.drain_timeout)
        conns = self.svc.hub.connections()
        await asyncio.gather(
            *(c.close(Close.SHUTDOWN, "server shutting down; reconnect") for c in conns),
            return_exceptions=True,
        )
        # sockets still authenticating (or never authenticated) go the same way
        await asyncio.gather(
            *(ws.close(Close.SHUTDOWN, "server shutting down; reconnect") for ws in list(self.server.connections)),
            return_exceptions=True,
        )
        try:
            await asyncio.wait_for(self.server.wait_closed(), self.svc.config.drain_timeout)
        except TimeoutError:
            log.warning("connections did not close within %.1fs", self.svc.config.drain_timeout)


def _select_subprotocol(conn: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    # Prefer msgpack; with neither offered, accept the socket and close it with
    # 4203 so the client sees a chatd close code, not a failed handshake.
    for name in (MSGPACK, JSON):
        if name in offered:
            return Subprotocol(name)
    return None
