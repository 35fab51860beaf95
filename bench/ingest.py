"""Durable ingest: acknowledged messages/s of chatd (server pinned to one core).

``--conns`` connections (one user each) keep ``--outstanding`` sends in flight:
each ack (sent by chatd only after the durable commit) releases the next send.
By default every sender writes to its own circle; ``--shared K`` spreads the
senders over K circles instead (every member then also receives the others'
messages). Measured over a fixed window after a warm-up: acks/s, ack latency
p50/p99 (send -> ack), server CPU per ack, generator CPU. Runs once per
``--sync`` mode (full and normal, when chatd has the flag), each on a fresh
SQLite file.

    .venv/bin/python bench/ingest.py            # ~1 min
    .venv/bin/python bench/ingest.py --quick
    .venv/bin/python bench/ingest.py --sync full --points both   # points pipeline off vs on
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import Counter
from typing import Any

import benchlib
import wsload


class Ingest:
    def __init__(self, outstanding: int, size: int) -> None:
        self.stats = wsload.Stats()
        self.outstanding = outstanding
        self.size = size
        self.ids = itertools.count(1).__next__
        self.running = False
        self.acks = 0
        self.sent = 0
        self.lat: list[int] = []
        self.recording = False
        self.errors: Counter[str] = Counter()
        self.conv: dict[wsload.WSConn, str] = {}

    def send(self, conn: wsload.WSConn) -> None:
        if not self.running or conn.closed:
            return
        i = self.ids()
        t = wsload.now_ns()
        conn.ctx[i] = t
        text = wsload.make_text(self.size, t)
        conn.send_obj({"id": i, "op": "send", "d": {"conv": self.conv[conn], "cid": f"i{i}", "text": text}})
        self.sent += 1

    def on_other(self, conn: wsload.WSConn, payload: bytes, t: int) -> None:
        obj = conn.loads(payload)
        rid = obj.get("id") if isinstance(obj, dict) else None
        if rid is None:
            return  # a push without our marker (system message)
        if rid in conn.pending:  # setup requests
            wsload.WSConn.dispatch_reply(conn, payload, t)
            return
        t0 = conn.ctx.pop(rid, None)
        if t0 is None:
            return
        err = obj.get("error")
        if err is not None:
            self.errors[str(err.get("code"))] += 1
            delay = (err.get("retry_after_ms") or 50) / 1000
            asyncio.get_running_loop().call_later(delay, self.send, conn)
            return
        self.acks += 1
        if self.recording:
            self.lat.append(t - t0)
        self.send(conn)


def points_lag(db: str) -> tuple[int, int]:
    """(messages, messages the rules hook has not processed yet) in a stopped server's file."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        n = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        try:
            cur = conn.execute("SELECT pos FROM hook_cursors WHERE hook = 'rules' AND source = 'messages'").fetchone()
        except sqlite3.OperationalError:
            return n, 0
        left = conn.execute("SELECT COUNT(*) FROM messages WHERE pos > ?", (cur[0] if cur else 0,)).fetchone()[0]
        return n, left
    finally:
        conn.close()


async def run_mode(
    args: argparse.Namespace, sync: str | None, points: bool | None = None, store: str = "sqlite", nodes: int = 1
) -> dict[str, Any]:
    ing = Ingest(args.outstanding, args.size)
    st = ing.stats
    servers = benchlib.Servers()
    pg = store == "postgresql"
    extra = (["--sync", sync] if sync and not pg else []) + (["--no-points"] if points is False else [])
    conns: list[wsload.WSConn] = []
    label = (
        (f"postgresql x{nodes}" + (f" (PostgreSQL on core {args.pg_core})" if args.pg_core else "") if pg else f"sqlite x{nodes} sync={sync or 'default'}")
        + ("" if points is None else f" points={'on' if points else 'off'}")
    )
    try:
        await servers.start_chatd(nodes, extra, prefix="bench-ingest-", store=store, pg_core=args.pg_core)
        proc, db = servers.proc, servers.db
        tokens = benchlib.Tokens()
        users = [f"ing{i}" for i in range(args.conns)]
        conns = await wsload.connect_many(  # spread over the processes
            args.conns,
            lambda i: benchlib.chatd_client(
                st, servers.ports[i % nodes], users[i], tokens.get(users[i]), args.proto, ing.on_other
            ),
        )
        for c in conns:
            c.ctx = {}
        n_circles = args.shared or args.conns
        owners = conns[:n_circles]
        reps = await asyncio.gather(
            *(c.request("circle.create", {"name": f"ingest {i}", "category": "interest"}) for i, c in enumerate(owners))
        )
        convs = [benchlib.check_reply(r, "circle.create")["conv"] for r in reps]
        joins = [
            c.request("circle.join", {"conv": convs[i % n_circles]}) for i, c in enumerate(conns) if i >= n_circles
        ]
        for r in await asyncio.gather(*joins):
            benchlib.check_reply(r, "circle.join")
        for i, c in enumerate(conns):
            ing.conv[c] = convs[i % n_circles]
        await benchlib.wait_quiet(30, server_pid=proc.pid)
        closes0 = Counter(st.closes)
        ing.running = True
        for c in conns:
            for _ in range(args.outstanding):
                ing.send(c)
        await asyncio.sleep(args.warmup)
        a0, s0 = ing.acks, ing.sent
        ing.recording = True
        pg_pid = servers.pg_pid()
        pg0 = sum(benchlib.cpu_times([pg_pid])) if pg_pid else 0.0
        w = benchlib.Window(servers.pids(), redis=servers.redis.pid if servers.redis else None).start()
        await asyncio.sleep(args.window)
        ing.recording = False
        w.stop()
        pg_cpu = sum(benchlib.cpu_times([pg_pid])) - pg0 if pg_pid else 0.0
        acks = ing.acks - a0
        sent = ing.sent - s0
        ing.running = False
        # drain what is in flight, bounded
        for _ in range(50):
            if not any(c.ctx for c in conns if not c.closed):
                break
            await asyncio.sleep(0.1)
        if points and not pg:
            # the worker yields to chat under load: how long it takes to catch up once the load stops
            t_stop = time.monotonic()
            total, left = points_lag(db)
            row_lag: dict[str, Any] = {"messages_at_stop": total, "awards_pending_at_load_stop": left}
            while left and time.monotonic() - t_stop < args.catch_up_limit:
                await asyncio.sleep(0.25)
                left = points_lag(db)[1]
            row_lag["catch_up_s"] = round(time.monotonic() - t_stop, 1) if not left else None
            print(
                f"  {label}: {row_lag['awards_pending_at_load_stop']:,} of {total:,} messages not yet through the"
                f" rules hook when the load stopped; caught up after {row_lag['catch_up_s']} s",
                flush=True,
            )
        el = w.elapsed
        a = max(acks, 1)
        closes = st.closes - closes0
        row = {
            "mode": label,
            "conns": args.conns,
            "circles": n_circles,
            "outstanding": args.outstanding,
            "acks_per_s": round(acks / el),
            "sent_per_s": round(sent / el),
            **wsload.lat_summary_ms(ing.lat),
            "server_us_per_ack": round(1e6 * w.server / a, 1),
            "server_cpu_pct": w.pct(w.server),
            "db_us_per_ack": round(1e6 * pg_cpu / a, 1) if pg else None,
            "db_cpu_pct": w.pct(pg_cpu) if pg else None,
            "redis_cpu_pct": w.pct(w.redis_cpu) if servers.redis else None,
            "gen_cpu_pct": w.pct(w.gen),
            # the machine's load outside chatd, Redis and the generator, less PostgreSQL's own
            "other_pct": round(max(0.0, w.other_pct - w.pct(pg_cpu)), 1) if pg else w.other_pct,
            "steal_pct": w.steal_pct,
            "in_flight_left": sum(len(c.ctx) for c in conns if not c.closed),
            "errors": dict(ing.errors) or None,
            "closes": dict(closes) or None,
            "lost": st.lost or None,
            **(row_lag if points else {}),
        }
        print(
            f"  {label}: {row['acks_per_s']:,} acks/s  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
            f"server {row['server_us_per_ack']} µs/ack ({row['server_cpu_pct']}% core)  "
            + (f"PostgreSQL {row['db_us_per_ack']} µs/ack ({row['db_cpu_pct']}%)  " if pg else "")
            + (f"Redis {row['redis_cpu_pct']}%  " if servers.redis else "")
            + f"generator {row['gen_cpu_pct']}%  others {row['other_pct']}%"
            + (f"  errors {row['errors']}" if row["errors"] else "")
            + (f"  closes {row['closes']}" if row["closes"] else ""),
            flush=True,
        )
        return row
    finally:
        for c in conns:
            c.abort()
        servers.stop()
        if points is not None and not pg and "row" in locals():
            total, left = points_lag(servers.db)
            row["messages"], row["awards_pending"] = total, left
            print(f"  {label}: {total:,} messages stored, {left:,} not yet through the rules hook at stop")
        servers.close()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for store in args.stores:
        if store == "sqlite":
            rows += [await run_mode(args, sync, points) for sync, points in args.modes]
        else:  # --sync is SQLite's; PostgreSQL commits with fsync on
            for nodes in args.pg_nodes:
                rows += [await run_mode(args, None, points, "postgresql", nodes) for points in args.pts]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50 connections, 3 s windows")
    ap.add_argument("--conns", type=int)
    ap.add_argument("--outstanding", type=int, default=8, help="sends in flight per connection (8)")
    ap.add_argument("--shared", type=int, default=0, help="K shared circles instead of one per sender")
    ap.add_argument("--size", type=int, default=120, help="message text bytes (120)")
    ap.add_argument("--proto", choices=["json", "msgpack"], default="json")
    ap.add_argument("--sync", choices=["full", "normal", "both"], default="both")
    ap.add_argument(
        "--points",
        choices=["on", "off", "both"],
        help="points pipeline: 'both' runs each sync mode with it off, then on (chatd's default is on)",
    )
    ap.add_argument(
        "--catch-up-limit", type=float, default=120.0, help="s to wait for the points worker after the load (120)"
    )
    ap.add_argument(
        "--store",
        default="sqlite",
        help="comma list of sqlite, postgresql (a server of its own on a free port, fsync on, on core 0 with chatd)",
    )
    ap.add_argument("--pg-nodes", default="1,3", help="chatd processes on PostgreSQL, comma list (1,3)")
    ap.add_argument(
        "--pg-core",
        type=int,
        choices=[0, 1],
        default=0,
        help="PostgreSQL's core: 0 with chatd (default), 1 with the generator, as a database on a machine of its own",
    )
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--window", type=float)
    args = ap.parse_args()
    q = args.quick
    args.conns = args.conns or (50 if q else 200)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if q else 3.0)
    args.window = args.window or (3.0 if q else 10.0)
    if not benchlib.chatd_available():
        raise SystemExit("chatd is not installed")
    has_sync = "--sync" in benchlib.chatd_help()
    syncs: list[str | None] = [None]
    if has_sync:
        syncs = ["full", "normal"] if args.sync == "both" else [args.sync]
    pts: list[bool | None] = [None]
    if args.points and "--no-points" in benchlib.chatd_help():
        pts = [False, True] if args.points == "both" else [args.points == "on"]
    args.modes = [(s, p) for s in syncs for p in pts]
    args.pts = pts
    args.stores = [x.strip() for x in args.store.split(",") if x.strip()]
    if not set(args.stores) <= {"sqlite", "postgresql"}:
        raise SystemExit("--store takes sqlite and/or postgresql")
    args.pg_nodes = [int(x) for x in args.pg_nodes.split(",")]
    rows = benchlib.run_pinned(run(args), watchdog=200)
    table = benchlib.md_table(
        rows,
        [
            ("mode", "mode"),
            ("conns", "conns"),
            ("circles", "circles"),
            ("in flight/conn", "outstanding"),
            ("acks/s", "acks_per_s"),
            ("p50 ms", "p50_ms"),
            ("p99 ms", "p99_ms"),
            ("max ms", "max_ms"),
            ("server µs/ack", "server_us_per_ack"),
            ("server core %", "server_cpu_pct"),
            ("PostgreSQL µs/ack", "db_us_per_ack"),
            ("PostgreSQL core %", "db_cpu_pct"),
            ("Redis core %", "redis_cpu_pct"),
            ("generator CPU %", "gen_cpu_pct"),
            ("others %", "other_pct"),
            ("errors", "errors"),
            ("closes", "closes"),
            *(
                [("awards pending when load stopped", "awards_pending_at_load_stop"), ("caught up after s", "catch_up_s")]
                if args.points
                else []
            ),
        ],
    )
    text = (
        f"{args.conns} senders x {args.outstanding} in flight, {args.size}-byte texts, "
        f"warm-up {args.warmup} s, window {args.window} s, chatd on core 0, generator on core 1 "
        "(goal ≥ 20,000 acks/s)\n\n" + table + "\n"
    )
    on = [r for r in rows if r["mode"].endswith("points=on")]
    off = [r for r in rows if r["mode"].endswith("points=off")]
    for r_on, r_off in zip(on, off, strict=False):
        drop = 100 * (1 - r_on["acks_per_s"] / max(1, r_off["acks_per_s"]))
        text += f"- {r_on['mode']}: {drop:.1f}% fewer acks/s than with points off (goal ≤ 10%)\n"
    print("\n" + text)
    benchlib.save_result({"bench": "ingest", "rows": rows}, "durable ingest (bench/ingest.py)", text, chatd=True)


if __name__ == "__main__":
    main()
