"""Exceptions raised by the chatd client.

::

    ClientError                 root of everything this package raises
    ├── ChatError               the server refused a request (error reply; socket stays open)
    ├── ConnectError            connect() could not open the first connection
    ├── ConnectionLost          the socket dropped while a non-idempotent request was
    │                           in flight: it may or may not have been applied
    └── ClientClosed            the client stopped: close() was called, or the server
        │                       closed with a "stop" code (4200-4299, 1009, ...)
        └── AuthError           the token was refused (4101/4102) and no
                                token_provider can give a new one

Codes are the protocol's (protocol/README.md §7 and §8).
"""

from __future__ import annotations


class ClientError(Exception):
    """Root of the client's exceptions."""


class ChatError(ClientError):
    """An error reply: ``code`` is one of protocol/README.md §7."""

    def __init__(
        self,
        code: str,
        message: str,
        temporary: bool = False,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.temporary = temporary
        self.retry_after_ms = retry_after_ms


class ConnectError(ClientError):
    """The first connection could not be opened (network, handshake, timeout)."""


class ConnectionLost(ClientError):
    """The connection dropped before the reply to a non-idempotent request arrived."""


class ClientClosed(ClientError):
    """The client is closed; ``code`` is the WebSocket close code that ended it, if any."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class AuthError(ClientClosed):
    """The server refused the token."""
