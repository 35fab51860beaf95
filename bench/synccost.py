"""CPU cost of one durable commit on this machine, without chatd: what any server that
acknowledges after a synced commit pays per commit, whatever its language.

Three loops, each on core 0, each for ``--seconds``, CPU time read from the process
(user + system, this thread only):

- ``fdatasync``: append one 4,120-byte WAL-sized frame to a file and ``fdatasync`` it;
- ``sqlite full``: a one-row INSERT transaction in a WAL SQLite file, ``synchronous=FULL``
  (chatd's ``--sync full``: the WAL is synced at every commit);
- ``sqlite off``: the same with ``synchronous=OFF`` (no sync): the difference is the
  sync's share of a commit.

Printed per loop: commits/s, CPU µs per commit (user, system), wall µs per commit; and
the sync's CPU per commit divided by 100 (the cost per delivery it adds in a circle of
100 members at one message per commit, as bench/fanout.py's 20,000/s runs are).

    .venv/bin/python bench/synccost.py
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable
from typing import Any

import benchlib


def cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_THREAD)
    return r.ru_utime, r.ru_stime


def measure(name: str, step: Callable[[int], None], seconds: float) -> dict[str, Any]:
    n = 0
    for _ in range(50):  # warm-up
        step(n)
        n += 1
    u0, s0 = cpu()
    w0 = time.perf_counter()
    n0 = n
    while time.perf_counter() - w0 < seconds:
        for _ in range(20):
            step(n)
            n += 1
    wall = time.perf_counter() - w0
    u1, s1 = cpu()
    n -= n0
    return {
        "loop": name,
        "commits_per_s": round(n / wall),
        "cpu_us": round((u1 - u0 + s1 - s0) / n * 1e6, 1),
        "user_us": round((u1 - u0) / n * 1e6, 1),
        "sys_us": round((s1 - s0) / n * 1e6, 1),
        "wall_us": round(wall / n * 1e6, 1),
    }


def fdatasync_loop(d: str, seconds: float) -> dict[str, Any]:
    fd = os.open(os.path.join(d, "wal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    frame = os.urandom(4120)
    try:

        def step(i: int) -> None:
            os.write(fd, frame)
            os.fdatasync(fd)

        return measure("fdatasync", step, seconds)
    finally:
        os.close(fd)


def sqlite_loop(d: str, sync: str, seconds: float) -> dict[str, Any]:
    db = sqlite3.connect(os.path.join(d, f"s-{sync}.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync}")
    db.execute("CREATE TABLE m (conv TEXT, seq INTEGER, body BLOB, PRIMARY KEY (conv, seq))")
    body = os.urandom(300)
    try:

        def step(i: int) -> None:
            db.execute("BEGIN")
            db.execute("INSERT INTO m VALUES (?, ?, ?)", ("c:1", i, body))
            db.execute("COMMIT")

        return measure(f"sqlite {sync.lower()}", step, seconds)
    finally:
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per loop (5)")
    ap.add_argument("--dir", help="where the files go (default: a temporary directory under /tmp)")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory(prefix="bench-sync-", dir=args.dir) as d:
        rows = [
            fdatasync_loop(d, args.seconds),
            sqlite_loop(d, "FULL", args.seconds),
            sqlite_loop(d, "OFF", args.seconds),
        ]
    cols = [
        ("loop", "loop"),
        ("commits/s", "commits_per_s"),
        ("CPU µs/commit", "cpu_us"),
        ("user µs", "user_us"),
        ("sys µs", "sys_us"),
        ("wall µs/commit", "wall_us"),
    ]
    full, off = rows[1], rows[2]
    sync_cpu = full["cpu_us"] - off["cpu_us"]
    lines = [
        f"- the sync's CPU per SQLite commit (full - off): {sync_cpu:.1f} µs; per delivery at 100 members and "
        f"one message per commit: {sync_cpu / 100:.2f} µs",
        f"- a bare fdatasync of one WAL frame: {rows[0]['cpu_us']} µs CPU, {rows[0]['wall_us']} µs wall",
    ]
    setup = f"{args.seconds} s per loop, core 0, files in {args.dir or tempfile.gettempdir()}"
    text = f"{setup}\n\n{benchlib.md_table(rows, cols)}\n\n" + "\n".join(lines) + "\n"
    print("\n" + text)
    benchlib.save_result(
        {"bench": "synccost", "setup": setup, "rows": rows, "sync_cpu_us": sync_cpu},
        "durable commit cost (bench/synccost.py)",
        text,
        chatd=False,
    )


if __name__ == "__main__":
    main()
