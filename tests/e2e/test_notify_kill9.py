"""Exactly-once notifications under kill -9 of a real ``chatd serve`` process:
killed while messages are sent and notifications planned and delivered; after the
restarts each message notified its offline recipient exactly once in the store,
and the hook had each at least once."""

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
    p = Proc(
        tmp_path / "chatd.db", free_port(), tmp_path / "chatd.log",
        "--notify-hook", "notify_hooks:FileMarker", "--notify-coalesce", "0", "--no-points", "--allow-dm-to-unknown-users",
    )
    p.env = {"PYTHONPATH": str(ROOT / "tests"), "CHATD_TEST_NOTIFY": str(tmp_path / "delivered")}
    yield p
    p.stop()


async def test_kill9_while_notifying_then_restart_notifies_each_message_once(proc: Proc, tmp_path: Path) -> None:
    delivered = tmp_path / "delivered"
    proc.start()
    await proc.healthy()
    sent = 0
    dm = ""
    for round_ in range(2):  # each restart waits out the dead process's job lease (10 s)
        alice = await WsClient.connect(f"ws://127.0.0.1:{proc.port}/", "msgpack")
        await alice.auth(token("alice"))
        dm = (await alice.call("dm.open", user="bob"))["conv"]
        for i in range(20):
            await alice.call("send", conv=dm, cid=f"r{round_}-{i}", text=f"message {sent}")
            sent += 1
        # kill as soon as the hook has seen some of this round: the rest may be
        # planned or not, delivered or not, the cursors committed or not
        want = f":bob:{dm}:{sent - 10}\n"
        await eventually(lambda w=want: delivered.exists() and w in delivered.read_text(), 10, 0.005)
        proc.kill9()
        await alice.close()
        proc.start()
        await proc.healthy()
    (epoch,) = read_db(proc.db, "SELECT value FROM meta WHERE name = 'epoch'")[0]
    keys = [f"{epoch}:bob:{dm}:{seq}" for seq in range(1, sent + 1)]

    def all_delivered() -> bool:
        return set(keys) <= set(delivered.read_text().split())

    await eventually(all_delivered, 15, 0.05, "not every notification reached the hook")
    await asyncio.sleep(0.5)  # nothing more comes
    rows = read_db(proc.db, "SELECT key, count FROM notifications ORDER BY id")
    assert [k for k, _ in rows] == keys and {c for _, c in rows} == {1}  # exactly once, in order
    calls = delivered.read_text().split()
    assert set(calls) == set(keys)  # at least once each; nothing else
    assert read_db(proc.db, "SELECT count(*) FROM hook_failures") == [(0,)]
