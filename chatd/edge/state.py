"""The session state table: every state a socket's session can be in and every
transition between them, in one place (h11's ``_state.py`` idea). Pure: no I/O,
unit-tested on its own (tests/edge/test_state.py).

::

    CONNECTING --auth request--> AUTHENTICATING --every check passed--> OPEN
        |                            |                                   |
        +------- close --------------+------------- close ---------------+--> CLOSING --gone--> CLOSED
        (any state) --gone (socket closed, slow consumer)--> CLOSED

What closes a session, and with which code:

- CONNECTING: no auth request in time -> 4100; another op first -> 4103;
  a malformed request -> 4200.
- AUTHENTICATING: a bad or expired token -> 4101 / 4102; a revoked token, or
  a kick after the auth began -> 4104; the store unavailable -> 1011.
- OPEN: a request flood -> 4202; the outbound buffer over its cap -> 4001
  (slow consumer: output stops at once, the session is gone); the token
  expired -> 4102; a backend's kick or revocation -> 4104 (requests queued
  are dropped unanswered); the server draining -> 4000.
- any state: an undecodable frame -> 4200; a wrong frame type -> 4201.

In CLOSING no input is taken; requests accepted before (queued ones, and sends
whose commit is under way) are still answered when the session had opened.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    CONNECTING = "connecting"  # the socket is open; no auth request yet
    AUTHENTICATING = "authenticating"  # auth in flight; requests queue behind it
    OPEN = "open"  # authenticated: requests are served, pushes delivered
    CLOSING = "closing"  # a close is under way: no more input
    CLOSED = "closed"  # gone: no more output either


class Event(enum.Enum):
    AUTH = "auth"  # the first request, auth, arrived
    AUTHENTICATED = "authenticated"  # every check of the auth passed
    CLOSE = "close"  # the server decided to close the socket
    GONE = "gone"  # the socket closed, or output stopped for good (slow consumer)


S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.CONNECTING, E.AUTH): S.AUTHENTICATING,
    (S.AUTHENTICATING, E.AUTHENTICATED): S.OPEN,
    (S.CONNECTING, E.CLOSE): S.CLOSING,
    (S.AUTHENTICATING, E.CLOSE): S.CLOSING,
    (S.OPEN, E.CLOSE): S.CLOSING,
    (S.CONNECTING, E.GONE): S.CLOSED,
    (S.AUTHENTICATING, E.GONE): S.CLOSED,
    (S.OPEN, E.GONE): S.CLOSED,
    (S.CLOSING, E.GONE): S.CLOSED,
    (S.CLOSED, E.GONE): S.CLOSED,
}


class BadTransition(Exception):
    """A transition the table does not have: a bug in the session, never the peer's doing."""


class SessionState:
    """The current state, the one place it changes, and what it allows."""

    __slots__ = ("opened", "state")

    def __init__(self) -> None:
        self.state = State.CONNECTING
        self.opened = False  # reached OPEN at some point (a close then answers what was accepted)

    def to(self, event: Event) -> State:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise BadTransition(f"{event.value} in state {self.state.value}")
        self.state = new
        if new is State.OPEN:
            self.opened = True
        return new

    def may(self, event: Event) -> bool:
        return (self.state, event) in TRANSITIONS

    @property
    def taking_input(self) -> bool:
        """Frames are read and handled (not while closing or closed)."""
        return self.state in (State.CONNECTING, State.AUTHENTICATING, State.OPEN)

    @property
    def serving(self) -> bool:
        """Accepted requests run and get answers: open, or closing after it was open."""
        return self.state is State.OPEN or (self.state is State.CLOSING and self.opened)
