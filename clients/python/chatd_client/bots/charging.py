"""The charging bot: chargers, charging cards, battery swap stations."""

from __future__ import annotations

from ..bot import IncomingMessage
from ..service_bot import Context, ServiceBot
from . import main


def build(url: str, token: str) -> ServiceBot:
    bot = ServiceBot(url, token)

    @bot.intent("charger", "charging", "充电", "充不进", "桩")
    def charger(msg: IncomingMessage, ctx: Context) -> str:
        ctx.data["topic"] = "charging"
        return ("充电问题收到。Please try another charger at the same site first; if it still fails, "
                "send the charger's number and I will open a repair ticket.")

    @bot.intent("swap", "换电")
    def swap(msg: IncomingMessage, ctx: Context) -> str:
        return "The nearest Power Swap station is shown in the app under Energy > Swap; a swap takes about 3 minutes."

    @bot.intent("technician", "人工", "human", hand_over=True)
    def human(msg: IncomingMessage, ctx: Context) -> str:
        return f"Charging question needs a person: {msg.text[:200]}"

    return bot


if __name__ == "__main__":
    main(build, "charging")
