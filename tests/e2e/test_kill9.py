"""kill -9 of a real `chatd serve` process under load loses no acknowledged message."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chatd_protocol import Reply
from chatdproc import Proc
from support import free_port, history_all, read_db, token
from wsclient import WsClient

pytestmark = pytest.mark.slow


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[Proc]:
    p = Proc(tmp_path / "chatd.db", free_port(), tmp_path / "chatd.log")
    yield p
    p.stop()


async def test_kill9_loses_no_acknowledged_message(proc: Proc) -> None:
    proc.start()
    await proc.healthy()
    url = f"ws://127.0.0.1:{proc.port}/"
    owner = await WsClient.connect(url)
    await owner.auth(token("owner"))
    conv = (await owner.call("circle.create", name="load", category="interest"))["conv"]
    senders = []
    for i in range(4):
        c = await WsClient.connect(url, "json" if i % 2 else "msgpack")
        await c.auth(token(f"s{i}"))
        await c.call("circle.join", conv=conv)
        senders.append(c)
    dm = (await senders[0].call("dm.open", user="s1"))["conv"]

    acked: list[tuple[str, int, str]] = []
    killed = asyncio.Event()

    async def pump(i: int, c: WsClient) -> None:
        k = 0
        while not killed.is_set():
            target = dm if (i < 2 and k % 3 == 0) else conv
            futs = [c.start("send", {"conv": target, "cid": f"s{i}-{k + j}", "text": f"{i}/{k + j}"}) for j in range(5)]
            for j, fut in enumerate(futs):
                try:
                    r = await asyncio.wait_for(fut, 5)
                except (ConnectionError, TimeoutError):
                    return
                if isinstance(r, Reply):
                    acked.append((r.d["conv"], r.d["seq"], f"s{i}-{k + j}"))
            k += 5

    pumps = [asyncio.get_running_loop().create_task(pump(i, c)) for i, c in enumerate(senders)]
    while len(acked) < 300:
        await asyncio.sleep(0.01)
        assert not any(p.done() for p in pumps), "a sender stopped before the kill"
    proc.kill9()  # mid-stream: requests are in flight
    killed.set()
    await asyncio.gather(*pumps)
    for c in (owner, *senders):
        assert await c.closed(5) == 1006  # no close frame from a killed process
        await c.close()
    assert len(acked) >= 300

    proc.start()
    await proc.healthy()
    reader = await WsClient.connect(url)
    await reader.auth(token("s1"))
    try:
        stored: dict[str, list[dict[str, Any]]] = {}
        for c in (conv, dm):
            msgs = await history_all(reader, c)
            stored[c] = msgs
            # gapless from 1
            assert [m["seq"] for m in msgs] == list(range(1, len(msgs) + 1))
        have = {(c, m["seq"], m.get("cid")) for c, msgs in stored.items() for m in msgs}
        lost = [a for a in acked if a not in have]
        assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
        # the cids are unique: nothing was stored twice
        cids = [m["cid"] for msgs in stored.values() for m in msgs if m["kind"] == "text"]
        assert len(cids) == len(set(cids))
        # the server accepts writes after the crash, continuing the sequence
        ack = await reader.call("send", conv=conv, cid="after-crash", text="still here")
        assert ack["seq"] == len(stored[conv]) + 1
    finally:
        await reader.close()
    assert read_db(proc.db, "PRAGMA integrity_check") == [("ok",)]
