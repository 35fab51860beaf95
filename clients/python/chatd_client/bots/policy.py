"""The purchase policy bot: prices, subsidies, trade-ins, financing."""

from __future__ import annotations

from ..bot import IncomingMessage
from ..service_bot import Context, ServiceBot
from . import main


def build(url: str, token: str) -> ServiceBot:
    bot = ServiceBot(url, token)

    @bot.intent("subsidy", "补贴", "trade-in", "置换")
    def subsidy(msg: IncomingMessage, ctx: Context) -> str:
        return "Trade-in subsidies depend on your city; your Fellow will send the current figures for yours."

    @bot.intent("price", "价格", "finance", "贷款", "lease")
    def price(msg: IncomingMessage, ctx: Context) -> str:
        return "Prices and financing plans are in the app under Buy; ask here if you want a quote sent to you."

    @bot.intent("contract", "合同", "refund", "退款", hand_over=True)
    def contract(msg: IncomingMessage, ctx: Context) -> str:
        return f"Contract or refund question: {msg.text[:200]}"

    return bot


if __name__ == "__main__":
    main(build, "policy")
