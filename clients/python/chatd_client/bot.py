"""A tiny bot framework on top of :class:`~chatd_client.client.Client`::

    bot = Bot("ws://127.0.0.1:8765", token)

    @bot.on_message
    async def echo(msg: IncomingMessage) -> None:
        if msg.text == "ping":
            await msg.reply("pong")

    asyncio.run(bot.run())

Handlers get every text message of the bot's conversations that the bot did
not send itself, exactly once and in order (the client's guarantee). They run
one at a time, in registration order; an exception in a handler is logged and
does not stop the bot.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .client import Client

log = logging.getLogger("chatd_client.bot")

Handler = Callable[["IncomingMessage"], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A text message as a handler sees it (``raw`` is the protocol's message)."""

    conv: str
    seq: int
    sender: str
    name: str
    text: str
    raw: dict[str, Any]
    client: Client = field(repr=False)

    @property
    def mentions_me(self) -> bool:
        me = self.client.user.get("id")
        return bool(self.raw.get("mention_all")) or me in self.raw.get("mentions", ())

    async def reply(self, text: str, **kwargs: Any) -> dict[str, Any]:
        """Send ``text`` to the conversation the message came from; return the ack."""
        return await self.client.send(self.conv, text, **kwargs)


class Bot:
    def __init__(self, url: str, token: str | None = None, **client_kwargs: Any) -> None:
        self.client = Client(url, token, **client_kwargs)
        self._handlers: list[Handler] = []
        #: set once run() is connected (the bot's user is in ``self.client.user``)
        self.ready = asyncio.Event()

    def on_message(self, handler: Handler) -> Handler:
        """Decorator: call ``handler(msg)`` for each text message from someone else."""
        self._handlers.append(handler)
        return handler

    async def run(self) -> None:
        """Connect and dispatch messages until :meth:`stop` (or the client stops)."""
        await self.client.connect()
        self.ready.set()
        try:
            async for event in self.client.events():
                if event.type != "msg":
                    continue
                msg = event.d
                if msg.get("kind") != "text" or "text" not in msg:
                    continue  # system messages, recalled messages
                if msg.get("from") == self.client.user.get("id"):
                    continue
                await self._dispatch(
                    IncomingMessage(
                        conv=msg["conv"],
                        seq=msg["seq"],
                        sender=msg["from"],
                        name=msg.get("author", {}).get("name", msg["from"]),
                        text=msg["text"],
                        raw=msg,
                        client=self.client,
                    )
                )
        finally:
            await self.client.close()

    async def stop(self) -> None:
        await self.client.close()

    async def _dispatch(self, msg: IncomingMessage) -> None:
        for handler in self._handlers:
            try:
                result = handler(msg)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("handler %s failed on %s #%s", handler, msg.conv, msg.seq)
