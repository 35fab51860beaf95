"""The repairs bot: warranty, service appointments, road service."""

from __future__ import annotations

from ..bot import IncomingMessage
from ..service_bot import Context, ServiceBot
from . import main


def build(url: str, token: str) -> ServiceBot:
    bot = ServiceBot(url, token)

    @bot.intent("accident", "breakdown", "事故", "抛锚", "救援", hand_over=True)
    def emergency(msg: IncomingMessage, ctx: Context) -> str:
        return f"Emergency: {msg.text[:200]}"  # never a bot's to answer: a human at once

    @bot.intent("warranty", "保修", "repair", "维修")
    def warranty(msg: IncomingMessage, ctx: Context) -> str:
        ctx.data["topic"] = "repair"
        return ("Your car's warranty covers the battery for 8 years or 160,000 km. "
                "Shall I book a service appointment? Reply with a day that suits you.")

    @bot.intent("appointment", "预约", "maintenance", "保养")
    def appointment(msg: IncomingMessage, ctx: Context) -> str:
        return "I can book maintenance: open Service > Requests in the app, or tell me the day here."

    return bot


if __name__ == "__main__":
    main(build, "repairs")
