"""Python client SDK for chatd: :class:`Client`, the :class:`Bot` framework, and
the ``chatd-chat`` terminal client (``chatd_client.chat``)."""

from .bot import Bot, IncomingMessage
from .client import IDEMPOTENT_OPS, Client, Event
from .errors import (
    AuthError,
    ChatError,
    ClientClosed,
    ClientError,
    ConnectError,
    ConnectionLost,
)
from .ordering import Gap, Ordering

__all__ = [
    "IDEMPOTENT_OPS",
    "AuthError",
    "Bot",
    "ChatError",
    "Client",
    "ClientClosed",
    "ClientError",
    "ConnectError",
    "ConnectionLost",
    "Event",
    "Gap",
    "IncomingMessage",
    "Ordering",
]
