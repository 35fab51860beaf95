"""What a presence change costs in a reconnect storm, without the chat around it.

chatd's own ``RedisPresence`` (``chatd/presence/redis.py``) in this process (core 1)
against a redis-server on core 0 (or, with ``--cluster``, a 3-master/3-replica Redis
Cluster of six servers on core 0, from tests/redisclusterproc.py). A round is a storm:
``--users`` users each put one device at once (all asked for in one turn of the event
loop, as a storm of reconnects does), then all of them dropped at once. Measured per
phase over ``--rounds`` rounds after one warm-up round: changes/s (wall clock), this
process's CPU µs per change, and Redis' CPU µs per change (/proc/<pid>/stat, every
server summed).

A/B against another revision (its ``chatd/`` copied by ``BENCH_CHATD_REV``):

    .venv/bin/python bench/presencecost.py                    # ~25 s
    BENCH_CHATD_REV=HEAD~1 .venv/bin/python bench/presencecost.py
    .venv/bin/python bench/presencecost.py --cluster          # ~20 s
    .venv/bin/python bench/presencecost.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import benchlib

T0 = 1_763_900_000_000
COLUMNS = {  # table heading -> row field
    "phase": "phase",
    "users": "users",
    "changes/s": "per_s",
    "this process µs/change": "client_us",
    "redis µs/change": "redis_us",
}


def _presence_class() -> Any:
    src = benchlib.chatd_source()
    if src is not None and str(src) not in sys.path:
        sys.path.insert(0, str(src))
    from chatd.presence import Device
    from chatd.presence.redis import RedisPresence

    return RedisPresence, Device


def _cluster() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from redisclusterproc import RedisClusterProc

    cluster = RedisClusterProc().start()
    for node in cluster.nodes:
        os.sched_setaffinity(node.pid, {0})
    return cluster


async def _phase(pids: list[int], n: int, run: Any) -> dict[str, float]:
    c0, r0, w0 = time.process_time(), sum(sum(benchlib.cpu_times(p)) for p in pids), time.monotonic()
    await run()
    c1, r1, w1 = time.process_time(), sum(sum(benchlib.cpu_times(p)) for p in pids), time.monotonic()
    return {"per_s": n / (w1 - w0), "client_us": 1e6 * (c1 - c0) / n, "redis_us": 1e6 * (r1 - r0) / n}


async def _measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    presence_cls, device = _presence_class()
    cluster = None
    if args.cluster:
        cluster = _cluster()
        url, pids = cluster.url, [node.pid for node in cluster.nodes]
    else:
        redis, port = benchlib.start_redis(core=0)
        url, pids = f"redis://{benchlib.HOST}:{port}/0", [redis.pid]
    p = presence_cls.from_url(url, "bench", "bench")
    users = [f"user{i}" for i in range(args.users)]
    samples: dict[str, list[dict[str, float]]] = {"put": [], "drop": []}
    try:
        await p.heartbeat(T0)
        for r in range(args.rounds + 1):
            now = T0 + 10 * r
            dev = device("bench", "online", False, now)

            async def puts(now: int = now, dev: Any = dev) -> None:
                await asyncio.gather(*(p.put(u, "d", dev, now) for u in users))

            async def drops(now: int = now) -> None:
                await asyncio.gather(*(p.drop(u, "d", now + 5) for u in users))

            put, drop = await _phase(pids, len(users), puts), await _phase(pids, len(users), drops)
            if r:  # the first round warms up (connections, the script cache)
                samples["put"].append(put)
                samples["drop"].append(drop)
    finally:
        await p.close()
        if cluster is not None:
            cluster.close()
    rows = []
    for phase, got in samples.items():
        row: dict[str, Any] = {"phase": phase, "users": args.users}
        for k in ("per_s", "client_us", "redis_us"):
            row[k] = round(statistics.median(s[k] for s in got), 1)
        rows.append(row)
        print(
            f"  {phase:>4}: {row['per_s']:,.0f} changes/s; CPU per change: this process "
            f"{row['client_us']} µs, redis {row['redis_us']} µs",
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, help="users in one storm (10,000)")
    ap.add_argument("--rounds", type=int, help="measured rounds (5)")
    ap.add_argument("--cluster", action="store_true", help="a 3+3 Redis Cluster instead of one server")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    args.users = args.users or (1000 if args.quick else 10_000)
    args.rounds = args.rounds or (3 if args.quick else 5)
    rows = benchlib.run_pinned(_measure(args), watchdog=180)
    table = benchlib.md_table(rows, list(COLUMNS.items()))
    where = "a 3-master/3-replica Redis Cluster" if args.cluster else "one redis-server"
    setup = (
        f"chatd's RedisPresence in the generator (core 1), {where} on core 0; a storm of {args.users} puts, "
        f"then as many drops, each asked for in one loop turn; medians of {args.rounds} rounds"
    )
    text = f"{setup}\n\n{table}\n"
    print("\n" + text)
    benchlib.save_result(
        {"bench": "presencecost", "setup": setup, "cluster": args.cluster, "rows": rows},
        "Presence change cost (bench/presencecost.py)",
        text,
        chatd=True,
    )


if __name__ == "__main__":
    main()
