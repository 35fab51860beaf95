"""Exactly-once awards under kill -9 of a real ``chatd serve`` process: killed
after the interaction's commit and before (or while) the hooks run; after a
restart every award exists once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from chatdproc import Proc
from support import ROOT, eventually, free_port, read_db, token
from wsclient import WsClient

pytestmark = pytest.mark.slow


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[Proc]:
    p = Proc(tmp_path / "chatd.db", free_port(), tmp_path / "chatd.log", "--points-hook", "points_hooks:Marker")
    p.env = {"PYTHONPATH": str(ROOT / "tests"), "CHATD_TEST_MARKER": str(tmp_path / "marker")}
    yield p
    p.stop()


async def connect(p: Proc, user: str) -> WsClient:
    c = await WsClient.connect(f"ws://127.0.0.1:{p.port}/", "msgpack")
    await c.auth(token(user))
    return c


async def wait_rows(db: Path, sql: str, n: int, within: float = 10.0) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []

    def enough() -> bool:
        rows[:] = read_db(db, sql)
        return len(rows) >= n

    await eventually(enough, within, 0.1, lambda: f"{len(rows)} of {n} rows")
    return rows


async def test_events_recorded_before_a_kill_are_awarded_once_after_restart(proc: Proc) -> None:
    proc.args = (*proc.args, "--no-points")  # record events, run no hook: the kill lands before any hook
    proc.start()
    await proc.healthy()
    alice = await connect(proc, "alice")
    conv = (await alice.call("circle.create", name="x", category="city"))["conv"]
    for i in range(20):
        await alice.call("send", conv=conv, cid=f"m{i}", text=f"m{i}")
    proc.kill9()
    await alice.close()
    assert read_db(proc.db, "SELECT COUNT(*) FROM ledger")[0][0] == 0

    proc.args = tuple(a for a in proc.args if a != "--no-points")
    for _ in range(2):  # a second restart must not award anything again
        proc.start()
        await proc.healthy()
        rows = await wait_rows(proc.db, "SELECT key, amount FROM ledger WHERE rule = 'marker'", 20)
        await asyncio.sleep(0.5)
        proc.kill9()
    rows = read_db(proc.db, "SELECT key, amount FROM ledger WHERE rule = 'marker'")
    assert sorted(rows) == sorted((f"marker:message.sent:{conv}:{seq}", 7) for seq in range(2, 22))
    bal = dict(read_db(proc.db, "SELECT currency, amount FROM balances WHERE user = 'alice'"))
    assert bal["points"] == 20 * 7 + 5 + 0  # marker + the daily check-in, once
    post = read_db(proc.db, "SELECT COUNT(*), SUM(amount) FROM ledger WHERE rule = 'post'")[0]
    assert post == (20, 20)  # 20 messages, under the daily cap of 20
    daily = read_db(proc.db, "SELECT n FROM daily WHERE user = 'alice' AND rule = 'post'")
    assert daily == [(20,)]


async def test_kill_while_hooks_run_then_restart_awards_each_event_once(proc: Proc, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    proc.start()
    await proc.healthy()
    alice = await connect(proc, "alice")
    conv = (await alice.call("circle.create", name="x", category="city"))["conv"]
    await alice.close()
    sent = 0
    for round_ in range(3):
        c = await connect(proc, "alice")
        for i in range(5):
            await c.call("send", conv=conv, cid=f"r{round_}-{i}", text="x")
            sent += 1
        # kill as soon as the hook has seen the last message: its awards may or may
        # not have committed
        want = f"message.sent:{conv}:{sent + 1}"

        def seen(want: str = want) -> bool:
            return marker.exists() and want in marker.read_text()

        await eventually(seen, 10, 0.005, "hook never ran")
        proc.kill9()
        await c.close()
        proc.start()
        await proc.healthy()
    rows = await wait_rows(proc.db, "SELECT key FROM ledger WHERE rule = 'marker'", sent)
    await asyncio.sleep(0.5)
    rows = read_db(proc.db, "SELECT key FROM ledger WHERE rule = 'marker'")
    assert len(rows) == sent == len(set(rows))
    assert dict(read_db(proc.db, "SELECT currency, amount FROM balances WHERE user = 'alice'"))["points"] == (
        sent * 7 + 5
    )
    # the hook may have been called twice for an event (at least once); it awarded once
    calls = marker.read_text().split()
    assert len(set(calls)) >= sent
