"""The reference client and a server whose store changed under it (issue 10,
defect 8): conversation ids and seqs start over in another store, so a client
that kept its position and what it had seen would drop the new store's
messages as duplicates, or skip them."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from chatd_client import Client

from chatd.auth import make_token
from chatd.store import new_epoch

from .test_client_e2e import Inbox, Server


async def client(server: Server, user: str) -> Client:
    c = Client(server.url, make_token(user=user, type="owner"), backoff_min=0.05, backoff_max=0.2)
    await c.connect()
    return c


async def start_on(path: Path, port: int) -> Server:
    s = Server(path.parent)
    s.db = str(path)
    s.port = port
    await s.start()
    return s


async def test_a_new_store_behind_the_same_url_is_caught_up_from_scratch(tmp_path: Path) -> None:
    first = await start_on(tmp_path / "first.db", 0)
    port = first.port
    alice, bob = await client(first, "alice"), await client(first, "bob")
    inbox = Inbox(bob)
    conv = (await alice.dm_open("bob"))["conv"]
    for i in range(3):
        await alice.send(conv, f"old {i}")
    await inbox.wait_for(lambda: len(inbox.texts(conv)) == 3)
    await first.stop()
    second = await start_on(tmp_path / "second.db", port)  # another store, same address
    try:
        await inbox.wait_for(lambda: any(e.type == "reset" for e in inbox.others))  # told to re-read
        assert (await alice.dm_open("bob"))["conv"] == conv  # the same id, seqs from 1 again
        for i in range(3):
            await alice.send(conv, f"new {i}")
        await inbox.wait_for(lambda: len(inbox.texts(conv)) == 6)
        assert inbox.texts(conv) == ["old 0", "old 1", "old 2", "new 0", "new 1", "new 2"]
    finally:
        await alice.close()
        await bob.close()
        await second.stop()


async def test_a_store_restored_from_an_older_copy_is_caught_up_from_its_position(tmp_path: Path) -> None:
    """A copy keeps its epoch, and its positions and seqs repeat those the client
    was given after the copy was taken: nothing in the messages tells them apart.
    The restore procedure gives the store a new epoch, and the client starts over."""
    live = await start_on(tmp_path / "live.db", 0)
    port = live.port
    alice, bob = await client(live, "alice"), await client(live, "bob")
    inbox = Inbox(bob)
    conv = (await alice.dm_open("bob"))["conv"]
    await alice.send(conv, "kept")
    await inbox.wait_for(lambda: len(inbox.texts(conv)) == 1)
    await live.stop()
    shutil.copy(tmp_path / "live.db", tmp_path / "backup.db")  # the nightly backup
    live = await start_on(tmp_path / "live.db", port)
    for i in range(3):  # messages the backup does not have
        await alice.send(conv, f"lost {i}")
    await inbox.wait_for(lambda: len(inbox.texts(conv)) == 4)
    await live.stop()
    new_epoch(str(tmp_path / "backup.db"))  # the restore procedure (docs/operations.md)
    restored = await start_on(tmp_path / "backup.db", port)  # the disk died: restored from the backup
    try:
        await inbox.wait_for(lambda: any(e.type == "reset" for e in inbox.others))
        for i in range(2):  # seq 2 and 3 again, in the restored store
            await alice.send(conv, f"after {i}")
        await inbox.wait_for(lambda: len(inbox.texts(conv)) >= 6)
        assert inbox.texts(conv) == ["kept", "lost 0", "lost 1", "lost 2", "after 0", "after 1"]
    finally:
        await alice.close()
        await bob.close()
        await restored.stop()


async def test_a_client_with_a_token_provider_renews_before_expiry(tmp_path: Path) -> None:
    """issue 10, item 15: a long-lived socket is not dropped at its token's expiry."""
    server = await start_on(tmp_path / "r.db", 0)
    issued: list[str] = []

    def provider() -> str:
        issued.append(make_token(user="staff1", type="staff", ttl=2))
        return issued[-1]

    c = Client(server.url, token_provider=provider, backoff_min=0.05)
    await c.connect()
    try:
        ws = c._conn._ws
        await asyncio.sleep(4.5)  # two token lifetimes
        assert len(issued) >= 3  # the first, and renewals before each expiry
        assert c._conn._ws is ws  # the same socket all along: never closed for expiry
        assert (await c.ping())["server_time"] > 0
    finally:
        await c.close()
        await server.stop()
