"""Bots in service groups: intents, per-conversation context, claim before answer,
and hand-over to a human (protocol/README.md §4, "Episodes and clocks")::

    bot = ServiceBot("ws://127.0.0.1:8765", token)

    @bot.intent("charger", "充电")
    async def charging(msg: IncomingMessage, ctx: Context) -> str | None:
        return "Try the charger next to it; I am booking a technician."

    @bot.intent("human", "人工", hand_over=True)
    def human(msg: IncomingMessage, ctx: Context) -> str:
        return "The owner asks for a person."          # what the Fellow should know

    asyncio.run(bot.run())

For each message the group's owner writes, the bot looks for the first intent
that matches (keywords, case-insensitive, or a callable of the message and its
context). Only then does it claim the message (``service.claim``): the server
gives each message to one bot, so several specialist bots share a group and
one answers. A claim refused (another bot has it, or a human is answering) means
the bot stays quiet. A ``hand_over`` intent hands the episode to a human
(``service.to_human``) with the text its function returns; any other intent's
text is sent as the reply (None: nothing). Messages from staff, other bots and
other conversations are only recorded in the context.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .bot import Bot, IncomingMessage
from .errors import ChatError

log = logging.getLogger("chatd_client.service_bot")

CONTEXT_LINES = 20
Answer = Callable[[IncomingMessage, "Context"], Awaitable[str | None] | str | None]
Matcher = Callable[[IncomingMessage, "Context"], bool]


@dataclass
class Context:
    """What the bot remembers of one service group: the last lines said there
    (``(sender, text)``, oldest first) and whatever the intents keep in ``data``."""

    conv: str
    owner: str
    lines: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=CONTEXT_LINES))
    data: dict[str, Any] = field(default_factory=dict)
    answered: int = 0  # messages this bot answered here


@dataclass(frozen=True)
class Intent:
    name: str
    match: Matcher
    answer: Answer
    hand_over: bool = False


def keywords(*words: str) -> Matcher:
    """Any of ``words``, case-insensitive: a Latin word as a whole word ("lease" is
    not in "please"), Chinese anywhere in the text (it has no spaces)."""
    parts = [re.escape(w.lower()) for w in words]
    pattern = re.compile("|".join(rf"(?<![a-z0-9]){p}(?![a-z0-9])" if p.isascii() else p for p in parts))

    def match(msg: IncomingMessage, ctx: Context) -> bool:
        return pattern.search(msg.text.lower()) is not None

    return match


class ServiceBot(Bot):
    def __init__(self, url: str, token: str | None = None, **client_kwargs: Any) -> None:
        super().__init__(url, token, **client_kwargs)
        self.intents: list[Intent] = []
        self.contexts: dict[str, Context] = {}
        self.claims_lost = 0
        self.on_message(self._service_message)

    def intent(
        self, *words: str, match: Matcher | None = None, name: str | None = None, hand_over: bool = False
    ) -> Callable[[Answer], Answer]:
        """Decorator: answer messages matching ``words`` (any of them) or ``match``."""
        if not words and match is None:
            raise ValueError("an intent needs keywords or a match function")
        matcher = match if match is not None else keywords(*words)

        def register(answer: Answer) -> Answer:
            self.intents.append(Intent(name or answer.__name__, matcher, answer, hand_over))
            return answer

        return register

    def context(self, conv: str) -> Context:
        ctx = self.contexts.get(conv)
        if ctx is None:
            ctx = self.contexts[conv] = Context(conv, conv.removeprefix("s:"))
        return ctx

    async def _service_message(self, msg: IncomingMessage) -> None:
        if not msg.conv.startswith("s:"):
            return
        ctx = self.context(msg.conv)
        ctx.lines.append((msg.sender, msg.text))
        if msg.sender != ctx.owner:
            return  # staff and the other bots: context only
        intent = next((i for i in self.intents if i.match(msg, ctx)), None)
        if intent is None:
            return
        try:
            await self.client.service_claim(msg.conv, msg.seq)
        except ChatError as exc:
            if exc.code != "conflict":
                raise
            self.claims_lost += 1
            log.info("%s: %s #%d is not mine (%s)", self.client.user.get("id"), msg.conv, msg.seq, exc.message)
            return
        result = intent.answer(msg, ctx)
        text = await result if inspect.isawaitable(result) else result
        if intent.hand_over:
            await self.client.service_to_human(msg.conv, text or None)
        elif text:
            await msg.reply(text)
            ctx.lines.append((str(self.client.user.get("id")), text))
        ctx.answered += 1
