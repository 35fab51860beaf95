"""``chatd copy-store``: a deployment on SQLite moves to PostgreSQL with every row as it
was, and a server on the copy carries on where the old one stopped (seqs, positions,
the epoch, balances, read cursors, the points hooks' cursors)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pgproc import PgProc
from support import eventually, read_db, stop_app

from chatd.cli import main as cli
from chatd.store.postgres.dialect import schema_catalog

pytestmark = pytest.mark.sqlite_only  # the source is a SQLite file whatever --store says


def tables(db: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of chatd's schema, sorted."""
    out = {}
    for name, t in schema_catalog().tables.items():
        rows = read_db(db, f"SELECT {', '.join(t.columns)} FROM {name}")
        out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


async def run_cli(*argv: str) -> int:
    return await asyncio.get_running_loop().run_in_executor(None, cli, list(argv))


async def busy_sqlite_store(make_server: Any, clients: Any, db: Path) -> dict[str, Any]:
    """A SQLite store with circles, DMs, reads, a recall, tips and awards in it."""
    app = await make_server(db_path=str(db), points=True)
    alice, bob = await clients(app, "alice", "owner"), await clients(app, "bob", "fan")
    circle = (await alice.call("circle.create", name="ES8 owners 车主", category="interest"))["conv"]
    await bob.call("circle.join", conv=circle)
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    for i in range(5):
        await alice.call("send", conv=circle, cid=f"c{i}", text=f"第{i}条 message")
        await bob.call("send", conv=dm, cid=f"d{i}", text=f"reply {i}")
    await bob.call("read", conv=circle, seq=4)
    await alice.call("recall", conv=circle, seq=3)
    async def awarded() -> bool:
        return bool((await alice.call("points.balance"))["points"] > 0)

    await eventually(awarded, what="no points awarded")
    await eventually(
        lambda: read_db(db, "SELECT COUNT(*) FROM hook_cursors WHERE pos > 0")[0][0] > 0, what="hooks never ran"
    )
    last = await alice.call("sync", since=0)
    await stop_app(app)
    return {"circle": circle, "dm": dm, "epoch": last["epoch"], "pos": last["pos"]}


async def test_copy_store_moves_every_row_and_a_server_on_the_copy_carries_on(
    make_server: Any, clients: Any, pg_server: PgProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "old.db"
    before = await busy_sqlite_store(make_server, clients, db)
    url = pg_server.create_db(migrated=True)
    assert await run_cli("copy-store", "--from", str(db), "--to", url) == 0
    assert "rows copied (" in capsys.readouterr().out
    source, copied = tables(db), tables(url)
    busy = {name for name, rows in source.items() if rows}
    assert {"messages", "members", "conversations", "users", "ledger", "balances", "hook_cursors", "counters",
            "meta"} <= busy, busy  # fmt: skip
    for name in source:
        assert copied[name] == source[name], name
    app = await make_server(db_path=url, points=True)
    alice, bob = await clients(app, "alice", "owner"), await clients(app, "bob", "fan")
    synced = await alice.call("sync", since=0)
    assert (synced["epoch"], synced["pos"]) == (before["epoch"], before["pos"])  # clients' positions stay valid
    ack = await alice.call("send", conv=before["circle"], cid="after", text="on PostgreSQL now")
    assert ack["pos"] == before["pos"] + 1 and ack["seq"] == 9  # created, joined, 5 texts, the recall, this
    again = await alice.call("send", conv=before["circle"], cid="c0", text="a retry from before the move")
    assert again["dup"] is True and again["seq"] == 3  # idempotency keys came along
    history = (await bob.call("history", conv=before["circle"]))["messages"]
    assert [m["seq"] for m in history] == list(range(1, 10)) and history[2].get("recalled")
    assert (await bob.call("read", conv=before["circle"], seq=2))["read_seq"] == 4  # the read cursor came along


async def test_copy_store_refuses_what_it_cannot_copy_faithfully(
    make_server: Any, clients: Any, pg_server: PgProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "old.db"
    await busy_sqlite_store(make_server, clients, db)
    url = pg_server.create_db(migrated=True)
    cases = [
        (["--from", str(tmp_path / "missing.db"), "--to", url], "no such SQLite file"),
        (["--from", str(db), "--to", str(tmp_path / "other.db")], "--to must be a postgresql:// URL"),
        (["--from", str(db), "--to", "postgresql://chatd@127.0.0.1:1/x"], "chatd copy-store:"),
        (["--from", str(db), "--to", pg_server.create_db()], "run `chatd migrate"),  # not migrated
        (["--from", str(tmp_path), "--to", url], "no such SQLite file"),  # a folder
    ]
    for argv, says in cases:
        assert await run_cli("copy-store", *argv) == 2, argv
        assert says in capsys.readouterr().err, argv
    assert await run_cli("copy-store", "--from", str(db), "--to", url) == 0
    assert await run_cli("copy-store", "--from", str(db), "--to", url) == 2  # twice: the target has data now
    assert "already holds chat data" in capsys.readouterr().err
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert await run_cli("copy-store", "--from", str(garbage), "--to", pg_server.create_db(migrated=True)) == 2
    assert "chatd copy-store:" in capsys.readouterr().err
