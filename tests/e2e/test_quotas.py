"""Creating things is limited (issue 10, defect 4): a DM only to a user the
server has seen, and per-user hourly quotas on new circles and new DMs, counted
in the store (so they hold across processes), on the server's clock."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from support import ROOT, FakeClock

from chatd.config import Config

STRICT = {"dm_unknown_users": False}  # the production default (the fixture's servers allow it)


async def test_a_dm_is_opened_only_to_a_user_the_server_has_seen(make_server: Any, clients: Any) -> None:
    app = await make_server(**STRICT)
    alice = await clients(app, "alice")
    await alice.fail("dm.open", "not_found", user="nobody-ever")
    assert (await alice.call("convs"))["convs"] == []  # nothing was created for the made-up id
    bob = await clients(app, "bob")  # bob authenticates once
    await bob.close()
    dm = await alice.call("dm.open", user="bob")
    assert dm["peer"] == "bob"
    assert (await alice.call("dm.open", user="bob"))["conv"] == dm["conv"]  # re-opening needs nothing new


async def test_a_deployment_may_allow_dms_to_users_it_has_not_seen(make_server: Any, clients: Any) -> None:
    app = await make_server(dm_unknown_users=True)
    alice = await clients(app, "alice")
    assert (await alice.call("dm.open", user="provisioned-elsewhere"))["peer"] == "provisioned-elsewhere"


async def test_circles_per_hour_per_user_on_the_servers_clock(
    make_server: Any, clients: Any, fake_clock: FakeClock
) -> None:
    app = await make_server(circles_per_hour=3, clock=fake_clock)
    fan = await clients(app, "fan", "fan")
    for i in range(3):
        await fan.call("circle.create", name=f"c{i}", category="interest")
    err = await fan.fail("circle.create", "rate_limited", name="one too many", category="interest")
    assert 0 < err.retry_after_ms <= 3_600_000
    await fan.fail("circle.create", "bad_request", name="", category="interest")  # refused early: not counted
    other = await clients(app, "other", "fan")
    await other.call("circle.create", name="mine", category="city")  # the quota is per user
    staff = await clients(app, "staff1", "staff")
    for i in range(5):  # staff create for others: no quota
        await staff.call("circle.create", name=f"s{i}", category="city")
    fake_clock.advance(err.retry_after_ms / 1000)
    await fan.call("circle.create", name="next hour", category="interest")
    listed = (await fan.call("circle.list", limit=100))["convs"]
    assert len([c for c in listed if c["owner"] == "fan"]) == 4


async def test_new_dms_per_hour_count_only_new_conversations(make_server: Any, clients: Any) -> None:
    app = await make_server(new_dms_per_hour=2, **STRICT)
    peers = [await clients(app, f"p{i}") for i in range(4)]
    fan = await clients(app, "fan", "fan")
    await fan.fail("dm.open", "not_found", user="ghost")  # refused: charges nothing
    first = await fan.call("dm.open", user="p0")
    await fan.call("dm.open", user="p1")
    assert (await fan.call("dm.open", user="p0"))["conv"] == first["conv"]  # an existing one is free
    await fan.fail("dm.open", "rate_limited", user="p2")
    await peers[3].call("dm.open", user="fan")  # the other side opening it counts for them, not for fan
    bot = await clients(app, "helper-bot", "bot")
    for p in ("p0", "p1", "p2"):  # bots message many owners: no quota
        await bot.call("dm.open", user=p)


async def test_a_quota_holds_across_processes_on_one_store(make_server: Any, clients: Any) -> None:
    a = await make_server(circles_per_hour=3)
    b = await make_server(circles_per_hour=3)  # another process on the same SQLite file
    on_a, on_b = await clients(a, "fan", "fan"), await clients(b, "fan", "fan")
    await on_a.call("circle.create", name="1", category="city")
    await on_b.call("circle.create", name="2", category="city")
    await on_a.call("circle.create", name="3", category="city")
    await on_b.fail("circle.create", "rate_limited", name="4", category="city")
    await on_a.fail("circle.create", "rate_limited", name="4", category="city")


@pytest.mark.parametrize("key", ["circles_per_hour", "new_dms_per_hour"])
def test_quota_settings_refuse_nonsense(key: str) -> None:
    with pytest.raises(ValueError, match="0 \\(no limit\\) or more"):
        Config(**{key: -1}).check()
    Config(**{key: 0}).check()
    Config(**{key: 10**6}).check()


@pytest.mark.parametrize("value", ["-1", "ten", "1.5", "", "99999999999999999999999x"])
@pytest.mark.parametrize("flag", ["--circles-per-hour", "--new-dms-per-hour"])
def test_quota_flags_refuse_garbage(flag: str, value: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "chatd", "serve", "--port", "0", flag, value],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert out.returncode == 2, out.stderr
    assert flag in out.stderr or "0 (no limit) or more" in out.stderr
