"""Serving: the WebSocket on any path and the HTTP route table on the same
port, subprotocol negotiation, and graceful drain. This package is the only
code in chatd that knows websockets or HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from chatd_protocol import JSON, MSGPACK, Close, FrameError, codec_for
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event as WsEvent
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import State as WsState
from websockets.typing import Subprotocol

from .heartbeat import RX, Heartbeat
from .http import Routes
from .proxy import forwarded_for, trusted_networks
from .session import Env, Session

log = logging.getLogger("chatd.server")


class _NoMessages:
    """Stands in for websockets' per-connection message queue (``Assembler``,
    ~0.9 KiB with its deque), which chatd never reads: data frames go to the
    session as they are parsed (``process_event``). Frames of a socket without
    a chatd subprotocol, closed at once, are dropped here."""

    __slots__ = ()

    def put(self, frame: Frame) -> None:
        pass

    def close(self) -> None:
        pass


_NO_MESSAGES = _NoMessages()


class ChatdConnection(ServerConnection):
    """websockets' server connection with data frames handed to chatd as they
    are parsed. ``env`` is set on a subclass made per server; the rest are
    class defaults, set on the instance only when they change (a new instance
    attribute can grow the instance's dict by ~1.5 KiB)."""

    env: Env
    chatd: Session | None = None
    forwarded: str | None = None  # the client's address a trusted proxy named (set on the instance)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.recv_messages = _NO_MESSAGES  # type: ignore[assignment]

    def attach(self) -> Session | None:
        """The session of this socket (made on first use), or None when no chatd
        subprotocol was negotiated."""
        if self.chatd is None:
            try:
                codec = codec_for(self.subprotocol)
            except FrameError:
                return None
            self.chatd = Session(self, self.env, codec)
        return self.chatd

    closing_written = False  # the close frame went out (once per socket; set on the instance)

    def send_data(self) -> None:
        """What websockets writes by itself (pongs, the close frame) counts
        against the socket's outbound cap too: a peer that sends pings and never
        reads would otherwise grow the buffer without bound (measured: 42 ->
        373 MB in 6 s). Over the cap, pongs are dropped and an open socket is
        closed as a slow consumer (4001); the close frame itself still goes out
        (one, small), nothing after it."""
        transport = self.transport
        state = self.protocol.state
        if transport.get_write_buffer_size() > self.env.config.out_buffer and (
            state is WsState.OPEN or (state is WsState.CLOSING and self.closing_written)
        ):
            for _ in self.protocol.data_to_send():
                pass  # dropped: the peer does not read them anyway
            session = self.chatd
            if state is WsState.OPEN and session is not None:
                session.close_soon(Close.SLOW_CONSUMER, "slow consumer")
            elif state is WsState.OPEN:
                transport.abort()
            return
        if state is WsState.CLOSING:
            self.closing_written = True
        super().send_data()

    def connection_lost(self, exc: Exception | None) -> None:
        """Also break the reference cycles a socket's objects form, so that
        they are freed at once by reference counting. Left to the cyclic
        collector they waited for a full collection, which chatd defers
        (cli.py, ``_tune_gc``): a soak of 9,000 connections an hour grew RSS
        24 % an hour (bench/results/2026-12-02-soak.md). This covers every
        connection, the HTTP requests (healthz, metrics) too."""
        super().connection_lost(exc)
        _unlink_protocol(self.protocol)
        session = self.chatd
        if session is not None:
            session.lost()

    def process_event(self, event: WsEvent) -> None:
        if isinstance(event, Frame):
            if event.opcode <= Opcode.BINARY:  # CONT, TEXT, BINARY
                session = self.attach()
                if session is not None:
                    session.hb |= RX
                    session.on_frame(event)
                    return
            elif self.chatd is not None:  # a pong (or a ping) is a sign of life too
                self.chatd.hb |= RX
        super().process_event(event)


LISTEN_BACKLOG = 4096


class SocketServer:
    def __init__(self, env: Env, routes: Routes) -> None:
        self.env = env
        self.routes = routes
        self.server: Server | None = None
        self.trusted = trusted_networks(env.config.trusted_proxies)
        interval = env.config.ping_interval
        self.heartbeat = Heartbeat(env.clock, interval) if interval else None

    async def start(self) -> int:
        cfg = self.env.config
        connection_class = type("ChatdConnection", (ChatdConnection,), {"env": self.env})
        self.server = await serve(
            self._handler,
            cfg.host,
            cfg.port,
            subprotocols=[Subprotocol(MSGPACK), Subprotocol(JSON)],
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            compression=None,
            max_size=cfg.max_frame,
            ping_interval=None,  # one shared heartbeat instead of a task per socket (heartbeat.py)
            close_timeout=2,
            server_header="chatd",
            reuse_address=True,
            reuse_port=cfg.reuse_port or None,
            create_connection=connection_class,
            # the kernel caps it at net.core.somaxconn (4096 by default): at asyncio's
            # default of 100 a reconnect storm overflowed the accept queue, dropped
            # SYNs came back after 1, 3, 7 s of retransmission, and clients timed out
            backlog=LISTEN_BACKLOG,
        )
        self.env.life.ready = True
        sock = next(iter(self.server.sockets))
        return int(sock.getsockname()[1])

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.trusted and isinstance(conn, ChatdConnection):
            conn.forwarded = forwarded_for(conn.remote_address, request.headers.get_all("X-Forwarded-For"), self.trusted)
        return self.routes.match(request.path)

    async def _handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, ChatdConnection)
        session = ws.attach()
        if session is None:
            self.env.metrics.closes.labels(str(Close.UNSUPPORTED_SUBPROTOCOL.value)).inc()
            await ws.close(Close.UNSUPPORTED_SUBPROTOCOL, "offer chatd.v1.msgpack or chatd.v1.json")
            return
        # The handshake's headers (~3 KB) are not needed once the socket is open;
        # websockets would keep them for the socket's lifetime, and the closure
        # that chose the subprotocol too.
        if ws.request is not None:
            ws.request.headers.clear()
        if ws.response is not None:
            ws.response.headers.clear()
        vars(ws.protocol).pop("select_subprotocol", None)
        # This coroutine is the socket's one task frame while it is open (the
        # session's timers are the clock's, its pings the shared heartbeat's):
        # it waits for the end on a plain future rather than wait_closed()'s
        # shield (two more futures and callbacks per socket).
        started, remote = session.begin()
        try:
            if not ws.connection_lost_waiter.done():
                if self.heartbeat is not None:
                    self.heartbeat.add(session)
                session.ended = ws.loop.create_future()  # resolved by connection_lost
                await session.ended
        finally:
            session.ended = None
            session.end(started, remote)
            # connection <-> session, session <-> sink (and the caller, via its
            # sink): freed by reference counting once broken
            session.sink.detach()
            ws.chatd = None

    async def drain(self) -> None:
        """Graceful shutdown: stop accepting, let committed writes be acked and
        pushed, then close every socket with 4000 (reconnect)."""
        env = self.env
        env.life.draining = True
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.server is None:
            return
        self.server.close(close_connections=False)
        try:
            await asyncio.wait_for(env.pipeline.drain(), env.config.drain_timeout)
        except TimeoutError:
            log.warning("store did not drain within %.1fs", env.config.drain_timeout)
        sockets = [ws for ws in self.server.connections if isinstance(ws, ChatdConnection)]
        # open sessions first (they answer what they accepted), then the rest:
        # sockets still authenticating or never authenticated go the same way
        sessions = [ws.chatd for ws in sockets if ws.chatd is not None and ws.chatd.opened]
        await asyncio.gather(
            *(s.close(Close.SHUTDOWN, "server shutting down; reconnect") for s in sessions), return_exceptions=True
        )
        await asyncio.gather(
            *(ws.close(Close.SHUTDOWN, "server shutting down; reconnect") for ws in list(self.server.connections)),
            return_exceptions=True,
        )
        try:
            await asyncio.wait_for(self.server.wait_closed(), env.config.drain_timeout)
        except TimeoutError:
            log.warning("connections did not close within %.1fs", env.config.drain_timeout)
        env.timers.stop()


def _unlink_protocol(protocol: WsProtocol) -> None:
    """Break the reference cycles websockets leaves in a connection's protocol
    when it ends: the bound ``select_subprotocol`` closure over the connection,
    the parser generator, whose frame holds the protocol, and the parser's
    exception (a connection lost without a close frame), whose traceback does.
    See ``ChatdConnection.connection_lost``."""
    vars(protocol).pop("select_subprotocol", None)  # the class's method again
    protocol.parser.close()  # the connection is lost: no byte is parsed again
    if protocol.parser_exc is not None:
        protocol.parser_exc.__traceback__ = None


def _select_subprotocol(conn: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    # Prefer msgpack; with neither offered, accept the socket and close it with
    # 4203 so the client sees a chatd close code, not a failed handshake.
    for name in (MSGPACK, JSON):
        if name in offered:
            return Subprotocol(name)
    return None
