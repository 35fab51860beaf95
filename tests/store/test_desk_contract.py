"""The service desk's store contract (chatd/store/base.py ``ServiceDesk`` and
``Campaigns``): a group's clock follows its messages in their transactions, the
clock's bookkeeping never costs a message, and campaigns conserve their stock.
Through the repository interfaces only, on every engine."""

from __future__ import annotations

from typing import Any

import pytest
from chatd_protocol import Err, RequestError
from storekit import AUTHOR, KINDS, TS, one

from chatd.policy import ServicePolicy
from chatd.store import Store
from chatd.store.records import SENDER_READS, ServiceClock, pack

SERVICE = KINDS.service
BACKEND = ("crm", AUTHOR, True)


async def group(s: Store, owner: str, tags: dict[str, str] | None = None) -> str:
    conv = SERVICE.conv_id(owner)
    await one(s, s.service.provision(conv, SERVICE.name, owner, "fiona", [("eng1", "staff", None),
                                                                          ("bot.x", "bot", None)],
                                     ("staff", "bot"), None, tags or {}, "crm", AUTHOR, TS))
    return conv


def say(s: Store, conv: str, sender: str, ts: int, policy: Any, cid: str) -> Any:
    return s.messages.append(conv, sender, cid, ts, pack({"a": AUTHOR, "t": "hi"}),
                             (SENDER_READS, ServiceClock("service_clock", policy)))


async def row(s: Store, conv: str) -> dict[str, Any]:
    (r,) = await s.desk.rows([conv])
    return r


async def test_the_clock_follows_the_messages(store: Store) -> None:
    policy = ServicePolicy(utc_offset_min=0, working_hours="00:00-24:00")
    conv = await group(store, "olivia")
    first = await one(store, say(store, conv, "olivia", TS, policy, "o1"))
    r = await row(store, conv)
    assert (r["waiting_since"], r["due"], r["state"], r["episode"]) == (TS, TS + 300_000, "bot", 1)
    await one(store, say(store, conv, "olivia", TS + 5_000, policy, "o2"))
    await one(store, say(store, conv, "bot.x", TS + 6_000, policy, "b1"))  # a bot does not stop it
    assert (await row(store, conv))["waiting_since"] == TS
    await one(store, say(store, conv, "eng1", TS + 400_000, policy, "e1"))
    r = await row(store, conv)
    assert (r["waiting_since"], r["due"], r["state"]) == (None, None, "human")
    assert r["rev"] > 0 and first.seq == 2
    await one(store, say(store, conv, "olivia", TS + 500_000, policy, "o3"))
    assert (await row(store, conv))["due"] == TS + 500_000 + 600_000  # the next-response clock
    # the episode closes, is rated, and its credit sums to one
    closed, _ = await one(store, store.desk.close_episode(conv, BACKEND, TS + 600_000, policy,
                                                          lambda k: SERVICE.require(conv, k), None))
    assert closed == 1
    shares, _, dup = await one(store, store.desk.rate(conv, 1, 5, "", ("olivia", AUTHOR, False), TS + 700_000,
                                                      policy, lambda k: SERVICE.require(conv, k)))
    assert shares == {"fiona": 400_000, "eng1": 600_000} and not dup
    report = await store.desk.report(TS, TS + 10**9)
    assert {r["user"]: (r["credit_millionths"], r["breaches"], r["closed_waiting"]) for r in report} == {
        "fiona": (400_000, 0, 0), "eng1": (600_000, 1, 0),  # 400 s against 300: one breach
        "crm": (0, 0, 1)}  # the backend closed while olivia waited (100 s: not yet overdue)


async def test_a_failing_clock_costs_no_message(store: Store) -> None:
    class Broken(ServicePolicy):
        def due(self, since_ms: int, urgent: bool, answered: bool) -> int:
            raise RuntimeError("a bug in the clock")

    conv = await group(store, "olivia")
    sent = await one(store, say(store, conv, "olivia", TS, Broken(), "o1"))
    assert sent.seq == 2 and not sent.dup
    msgs, _ = await store.messages.history(conv, None, 10)
    assert [m["seq"] for m in msgs] == [1, 2]  # stored; only the clock's bookkeeping of it is lost
    r = await row(store, conv)
    assert (r["waiting_since"], r["episode"]) == (None, None)  # the savepoint undid all of it, the episode too
    ok = await one(store, say(store, conv, "olivia", TS + 1, ServicePolicy(), "o2"))
    assert ok.seq == 3 and (await row(store, conv))["episode"] == 1


async def test_a_campaign_posts_each_group_once_and_never_oversells(store: Store) -> None:
    convs = [await group(store, f"o{i}", {"city": "Shanghai" if i % 2 else "Hefei"}) for i in range(7)]
    made = await one(store, store.campaigns.create("crm", AUTHOR, "c1", {"type": "gift", "title": "t"},
                                                   {"city": "Shanghai"}, 2, 50, TS))
    assert (made["targets"], made["dup"]) == (3, False)
    posted: list[str] = []
    more = True
    while more:
        events, more = await one(store, store.campaigns.post_chunk(TS, 2))
        posted += [e.msg["conv"] for e in events]
    assert posted == [convs[1], convs[3], convs[5]]
    got = await store.campaigns.get(made["id"])
    assert got is not None and (got["posted"], got["done"]) == (3, True)
    wins = 0
    for i in (1, 3, 5):
        try:
            _reply, push = await one(store, store.campaigns.claim(f"o{i}", convs[i], made["id"], TS))
            wins += 1
            assert push[f"o{i}"]["balance"]["points"] == 50
        except RequestError as exc:
            assert exc.code is Err.CONFLICT
    assert wins == 2
    with pytest.raises(RequestError) as exc_info:
        await one(store, store.campaigns.claim("o0", convs[0], made["id"], TS))  # Hefei: not posted there
    assert exc_info.value.code is Err.NOT_FOUND
