"""A socket as the hub and presence see it: a bounded write that never awaits.

:class:`SocketSink` writes complete, unmasked WebSocket frames (``wsframe.py``)
straight to the transport. While the pipeline delivers a batch, output is
corked (:class:`Output`): frames for a socket collect in its ``pending`` list
and ``uncork`` hands each socket's frames to its transport in one write, so the
acks and pushes one batch produces for one socket cost one syscall, not one
each.

Slow consumers: before each write the transport's buffer is checked; past the
cap (``--out-buffer``, 1 MiB) the sink stops taking frames and tells its owner,
which closes the socket with 4001. Memory per socket stays under twice the cap
plus one frame (the transport's buffer, plus frames held while corked, which
are handed over early past the cap).
"""

from __future__ import annotations

from asyncio import Transport
from typing import Protocol

from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import State as WsState


class Output:
    __slots__ = ("corked", "dirty")

    def __init__(self) -> None:
        self.corked = False
        self.dirty: list[SocketSink] = []

    def cork(self) -> None:
        self.corked = True

    def uncork(self) -> None:
        self.corked = False
        dirty, self.dirty = self.dirty, []
        for sink in dirty:
            sink.flush()


class SinkOwner(Protocol):
    def slow(self) -> None:
        """The sink's buffer passed its cap: close the socket (4001)."""
        ...

    def sign_out(self, before: int, kicked: int) -> None:
        """A backend signed the user out (close 4104 if it applies to this socket)."""
        ...


class _Gone:
    """The owner of a sink whose socket has ended (see ``SocketSink.detach``)."""

    __slots__ = ()

    def slow(self) -> None:
        pass

    def sign_out(self, before: int, kicked: int) -> None:
        pass


GONE = _Gone()


class SocketSink:
    __slots__ = ("cap", "open", "out", "owner", "pending", "pending_size", "proto", "slot", "transport")

    def __init__(
        self, transport: Transport, proto: WsProtocol, slot: int, out: Output, cap: int, owner: SinkOwner
    ) -> None:
        self.transport = transport
        self.proto = proto
        self.slot = slot
        self.out = out
        self.cap = cap
        self.owner = owner
        self.open = False  # takes frames only while the session is open (never before the auth reply)
        self.pending: bytes | list[bytes] | None = None  # frames held while output is corked (one, or a list)
        self.pending_size = 0

    def detach(self) -> None:
        """The socket has ended: drop the reference back to its session, so
        that the two (and the caller, which refers to this sink) are freed by
        reference counting instead of waiting for a full collection."""
        self.open = False
        self.owner = GONE

    def sign_out(self, before: int, kicked: int) -> None:
        self.owner.sign_out(before, kicked)

    def write(self, data: bytes) -> None:
        """Queue one complete frame for this socket (see _send for the cap).

        While corked, a socket's first frame of the batch is held as it is and
        only a second one makes a list: at ordinary loads a socket gets one
        push per batch, and the list and the join were most of the cost of a
        delivery in Python (0.81 -> ~0.6 µs per delivery measured in isolation)."""
        if not self.open or self.proto.state is not WsState.OPEN:
            return
        out = self.out
        if not out.corked:
            self._send(data)
            return
        pending = self.pending
        if pending is not None and self.pending_size + len(data) > self.cap:
            self.flush()  # bound what is held back; slowness is judged in _send
            if not self.open:
                return
            pending = None
        if pending is None:
            self.pending = data
            self.pending_size = len(data)
            out.dirty.append(self)
            return
        self.pending_size += len(data)
        if isinstance(pending, bytes):
            self.pending = [pending, data]
        else:
            pending.append(data)

    def flush(self) -> None:
        """Hand the frames held while corked to the transport in one write."""
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        self.pending_size = 0
        if self.open and self.proto.state is WsState.OPEN:
            self._send(pending if isinstance(pending, bytes) else b"".join(pending))

    def _send(self, data: bytes) -> None:
        """Slow consumer when the bytes already queued (not yet taken by the
        kernel) are past the cap. A frame is always accepted below the cap, so
        one large reply never counts as slowness."""
        transport = self.transport
        if transport.get_write_buffer_size() > self.cap:
            self.owner.slow()
            return
        transport.write(data)
