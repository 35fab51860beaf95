"""Positions belong to a store (issue 10, defect 8): ``sync`` from a position
this store never gave answers the store's real position, and every auth and
sync reply names the store's epoch, so a client can tell a position from
elsewhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, stop_app, token


async def test_auth_and_sync_name_the_epoch_and_a_foreign_position_gets_the_real_one(
    make_server: Any, clients: Any
) -> None:
    app = await make_server()
    alice = await clients(app, "alice")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    ack = await alice.call("send", conv=conv, cid="1", text="one")
    epoch = (await alice.call("sync", since=0))["epoch"]
    assert isinstance(epoch, str) and len(epoch) == 16
    assert (await (await clients(app, None)).auth(token("carol")))["epoch"] == epoch
    far = await alice.call("sync", since=ack["pos"] + 1000)  # a position from another store
    assert far == {"messages": [], "pos": ack["pos"], "more": False, "convs": [], "epoch": epoch}
    assert (await alice.call("sync", since=ack["pos"]))["pos"] == ack["pos"]  # the head itself is fine


async def test_another_store_has_another_epoch_and_a_copy_keeps_it(
    make_server: Any, clients: Any, tmp_path: Path
) -> None:
    a = await make_server(db_path=str(tmp_path / "a.db"))
    b = await make_server(db_path=str(tmp_path / "b.db"))
    epoch_a = (await (await clients(a, "alice")).call("sync", since=0))["epoch"]
    epoch_b = (await (await clients(b, "alice")).call("sync", since=0))["epoch"]
    assert epoch_a != epoch_b
    await stop_app(a)
    shutil.copy(tmp_path / "a.db", tmp_path / "restored.db")  # a backup restored elsewhere
    restored = await make_server(db_path=str(tmp_path / "restored.db"))
    assert (await (await clients(restored, "alice")).call("sync", since=0))["epoch"] == epoch_a


async def test_a_position_from_a_busier_process_on_the_same_store_is_no_foreign_one(
    make_server: Any, clients: Any
) -> None:
    """Processes on one store: one's commits do not move the other's pipeline head,
    yet its positions are the store's."""
    a = await make_server()
    b = await make_server()
    on_b = await clients(b, "alice")
    conv = (await on_b.call("dm.open", user="bob"))["conv"]
    last = None
    for i in range(5):
        last = await on_b.call("send", conv=conv, cid=f"b{i}", text="on b")
    assert last is not None
    on_a = await clients(a, "alice")
    reply = await on_a.call("sync", since=last["pos"])
    assert reply["pos"] == last["pos"] and reply["messages"] == []


def run_chatd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatd", *args], capture_output=True, text=True, timeout=30, cwd=ROOT)


async def test_new_epoch_renames_a_restored_store(make_server: Any, clients: Any, tmp_path: Path) -> None:
    db = tmp_path / "restored.db"
    app = await make_server(db_path=str(db))
    before = (await (await clients(app, "alice")).call("sync", since=0))["epoch"]
    await stop_app(app)
    out = run_chatd("new-epoch", "--db", str(db))
    assert out.returncode == 0, out.stderr
    after = out.stdout.strip()
    assert len(after) == 16 and after != before
    again = await make_server(db_path=str(db))
    assert (await (await clients(again, "alice")).call("sync", since=0))["epoch"] == after


@pytest.mark.parametrize(
    "args",
    [[], ["--db"], ["--db", "/nonexistent/chatd.db"], ["--db", "postgresql://x/y"], ["--db", "a", "--extra"]],
)
def test_new_epoch_refuses_garbage(args: list[str]) -> None:
    out = run_chatd("new-epoch", *args)
    assert out.returncode == 2, out
    assert out.stderr.strip()
    assert not (ROOT / "a").exists()  # a missing store is refused, never created
