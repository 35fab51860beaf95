"""The client's service-group bot framework and its three example bots against a
real in-process chatd: one bot answers each customer message (claims), bots stay
quiet after a staff reply, and a hand-over reaches the Fellow."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from chatd_client import Client
from chatd_client.bots import charging, policy, repairs
from chatd_client.service_bot import ServiceBot
from support import admin_call, eventually, url

from chatd.auth import make_token

BOTS = {"bot.charging": charging.build, "bot.repairs": repairs.build, "bot.policy": policy.build}


@pytest.fixture
async def app(make_server: Any) -> Any:
    return await make_server(admin_port=0)


@pytest.fixture
async def bots(app: Any) -> AsyncIterator[dict[str, ServiceBot]]:
    status, reply = await admin_call(app, "service.provision", {
        "owner": "olivia", "fellow": "fiona", "staff": [{"user": "eng1"}], "bots": list(BOTS)})
    assert status == 200, reply
    running: dict[str, ServiceBot] = {}
    tasks = []
    for user, build in BOTS.items():
        bot = build(url(app), make_token(user, "bot", name=user))
        bot.client.backoff_min = 0.05
        running[user] = bot
        tasks.append(asyncio.create_task(bot.run()))
    for bot in running.values():
        await asyncio.wait_for(bot.ready.wait(), 5)
    yield running
    for bot in running.values():
        await bot.stop()
    for t in tasks:
        t.cancel()
        with contextlib.suppress(BaseException):
            await t


async def person(app: Any, user: str, type_: str) -> Client:
    c = Client(url(app), make_token(user, type_, name=user), backoff_min=0.05)
    await c.connect()
    return c


async def texts_after(c: Client, conv: str, seq: int) -> list[dict[str, Any]]:
    msgs = (await c.history(conv, limit=100))["messages"]
    return [m for m in msgs if m["seq"] > seq and m.get("kind") == "text"]


async def test_one_bot_answers_each_customer_message(app: Any, bots: dict[str, ServiceBot]) -> None:
    owner = await person(app, "olivia", "owner")
    try:
        conv = "s:olivia"
        for text, who in (("我的车充不进电 my charger fails", "bot.charging"),
                          ("Is the battery under warranty?", "bot.repairs"),
                          ("What trade-in subsidy is there?", "bot.policy")):
            sent = await owner.send(conv, text)

            async def answered(seq: int = sent["seq"]) -> bool:
                return bool(await texts_after(owner, conv, seq))

            await eventually(answered, within=5)
            await asyncio.sleep(0.2)  # a second answer would be here by now
            replies = await texts_after(owner, conv, sent["seq"])
            assert [m["from"] for m in replies] == [who], replies
        # a message no intent knows: nobody answers, nobody claims
        quiet = await owner.send(conv, "hello")
        await asyncio.sleep(0.3)
        assert await texts_after(owner, conv, quiet["seq"]) == []
    finally:
        await owner.close()


async def test_two_bots_wanting_one_message_one_answers(app: Any, bots: dict[str, ServiceBot]) -> None:
    # the repairs bot learns charging words too: both match, the server gives it to one
    @bots["bot.repairs"].intent("charger")
    def charger_repair(msg: Any, ctx: Any) -> str:
        return "I can repair the charger"

    owner = await person(app, "olivia", "owner")
    try:
        sent = await owner.send("s:olivia", "the charger is broken")

        async def answered() -> bool:
            return bool(await texts_after(owner, "s:olivia", sent["seq"]))

        await eventually(answered, within=5)
        await asyncio.sleep(0.3)
        assert len(await texts_after(owner, "s:olivia", sent["seq"])) == 1
        assert bots["bot.charging"].claims_lost + bots["bot.repairs"].claims_lost == 1
    finally:
        await owner.close()


async def test_bots_stay_quiet_after_staff_and_hand_over_to_the_fellow(app: Any, bots: dict[str, ServiceBot]) -> None:
    owner = await person(app, "olivia", "owner")
    eng = await person(app, "eng1", "staff")
    fellow = await person(app, "fiona", "staff")
    try:
        conv = "s:olivia"
        await eng.send(conv, "Engineer Li here, I am looking at your car")
        sent = await owner.send(conv, "the charger still fails")
        await asyncio.sleep(0.5)
        assert await texts_after(owner, conv, sent["seq"]) == []  # a human is answering: bots quiet
        assert bots["bot.charging"].claims_lost == 1

        # the quiet time holds across a close too: a staff member was here a moment ago
        await eng.service_close(conv)
        again = await owner.send(conv, "charger, again")

        async def refused_twice() -> bool:
            return bots["bot.charging"].claims_lost == 2  # it tried, and was told a human has it

        await eventually(refused_twice, within=5)
        assert await texts_after(owner, conv, again["seq"]) == []

        # in another owner's group, nobody from staff has written: the owner asks for a person
        status, _ = await admin_call(app, "service.provision", {"owner": "oscar", "fellow": "fiona",
                                                                "bots": list(BOTS)})
        assert status == 200
        oscar = await person(app, "oscar", "owner")
        try:
            handed = await oscar.send("s:oscar", "我要人工 human please")

            async def needs_human() -> bool:
                rows = (await fellow.inbox(filter="needs_human"))["rows"]
                return [r["conv"] for r in rows] == ["s:oscar"]

            await eventually(needs_human, within=5,
                             what=lambda: str({k: b.claims_lost for k, b in bots.items()}))
            history = (await oscar.history("s:oscar", limit=5))["messages"]
            event = next(m["event"] for m in history if m.get("event", {}).get("type") == "handover")
            assert event["fellow"] == "fiona" and "human please" in event["text"]
            assert await texts_after(oscar, "s:oscar", handed["seq"]) == []  # handed over, not answered
        finally:
            await oscar.close()
    finally:
        for c in (owner, eng, fellow):
            await c.close()


def test_keywords_match_whole_latin_words_and_chinese_anywhere() -> None:
    from chatd_client.service_bot import Context, keywords

    match = keywords("lease", "充电")
    ctx = Context("s:o", "o")

    def says(text: str) -> bool:
        msg: Any = type("M", (), {"text": text})()
        return match(msg, ctx)

    assert says("Can I LEASE it?") and says("我想充电") and says("lease.")
    assert not says("please help") and not says("leased") and not says("hello")
