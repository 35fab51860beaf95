"""Server memory and CPU per idle connection: chatd against two floors, bare websockets and Node's ws.

For each server: start it (pinned to core 0), open ``--warm`` connections and take
the baseline RSS (VmRSS of the server and its children, /proc/<pid>/status), then
open ``--conns`` more in batches (chatd: each authenticates with its own user and
waits for the reply; floor: each joins a room by URL path), let them sit idle
for a few seconds, and take RSS again. Reported: (RSS after - baseline) / conns.
Then the server's CPU over ``--cpu-window`` seconds of idleness (default 45 s:
two of chatd's 20 s keepalive rounds), as a share of one core: what keeping
the sockets alive costs (chatd's shared heartbeat, bare websockets' keepalive
task per socket, Node ws without pings).

    .venv/bin/python bench/idle.py            # 10,000 connections, ~1.5 min
    .venv/bin/python bench/idle.py --quick    # 1,000 connections
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import benchlib
import wsload


async def open_conns(kind: str, st: wsload.Stats, port: int, n: int, offset: int, tokens: Any) -> list[Any]:
    if kind in ("floor", "node"):
        return await wsload.connect_many(
            n, lambda i: wsload.connect(st, benchlib.HOST, port, f"/room/{(offset + i) % 100}"), concurrency=200
        )
    users = [f"idle{offset + i}" for i in range(n)]
    return await wsload.connect_many(
        n, lambda i: benchlib.chatd_client(st, port, users[i], tokens.get(users[i])), concurrency=200
    )


async def measure(
    kind: str, n: int, warm: int, idle_s: float, cpu_window: float, chatd_args: list[str]
) -> dict[str, Any]:
    st = wsload.Stats()
    servers = benchlib.Servers()
    conns: list[Any] = []
    try:
        if kind in ("floor", "node"):
            await servers.start_floor(node=kind == "node")
        else:
            await servers.start_chatd(1, extra=chatd_args, prefix="bench-idle-")
        proc, port = servers.proc, servers.port
        tokens = benchlib.Tokens() if kind == "chatd" else None
        await benchlib.wait_quiet(30, server_pid=proc.pid)
        rss_start = benchlib.rss_kb(proc.pid)
        conns += await open_conns(kind, st, port, warm, 0, tokens)
        await asyncio.sleep(1.5)
        rss0 = benchlib.rss_kb(proc.pid)
        t0 = time.monotonic()
        for off in range(0, n, 1000):
            conns += await open_conns(kind, st, port, min(1000, n - off), warm + off, tokens)
        open_s = time.monotonic() - t0
        await asyncio.sleep(idle_s)
        rss1 = benchlib.rss_kb(proc.pid)
        cpu_share = None
        if cpu_window > 0:
            u0, s0 = benchlib.cpu_times(proc.pid)
            await asyncio.sleep(cpu_window)
            u1, s1 = benchlib.cpu_times(proc.pid)
            cpu_share = round((u1 - u0 + s1 - s0) / cpu_window * 100, 2)
        alive = sum(1 for c in conns if not c.closed)
        res = {
            "server": kind,
            "conns": n,
            "rss_start_mib": round(rss_start / 1024, 1),
            "rss_base_mib": round(rss0 / 1024, 1),
            "rss_after_mib": round(rss1 / 1024, 1),
            "kib_per_conn": round((rss1 - rss0) / n, 2),
            "kb_per_conn": round((rss1 - rss0) * 1.024 / n, 2),
            "open_s": round(open_s, 1),
            "idle_cpu_pct": cpu_share,
            "alive": alive,
            "closes": dict(st.closes) or None,
            "lost": st.lost or None,
        }
        print(
            f"  {kind:5}: {n:,} idle conns: RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB = "
            f"{res['kib_per_conn']} KiB/conn ({res['kb_per_conn']} kB); opened in {open_s:.1f} s; "
            f"idle CPU {cpu_share}% of a core; {alive:,} of {len(conns):,} still open",
            flush=True,
        )
        return res
    finally:
        for c in conns:
            c.abort()
        servers.close()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [
        await measure(k, args.conns, args.warm, args.idle, args.cpu_window, args.chatd_arg) for k in args.targets
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 connections")
    ap.add_argument("--target", choices=["both", "floor", "node", "chatd"], default="both",
                    help="both = floor (bare websockets) + node (Node's ws) + chatd")
    ap.add_argument("--conns", type=int)
    ap.add_argument("--warm", type=int, default=100, help="connections opened before the baseline")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds idle before the reading")
    ap.add_argument("--cpu-window", type=float, default=45.0,
                    help="seconds of idleness over which the server's CPU is read (0: skip)")
    ap.add_argument("--chatd-arg", action="append", default=[],
                    help="a flag for chatd serve (repeat; e.g. --chatd-arg=--ping-interval --chatd-arg=0)")
    args = ap.parse_args()
    args.conns = args.conns or (1000 if args.quick else 10_000)
    args.targets = ["floor", "node", "chatd"] if args.target == "both" else [args.target]
    if "chatd" in args.targets and not benchlib.chatd_available():
        print("chatd is not installed yet: floor only")
        args.targets.remove("chatd")
    rows = benchlib.run_pinned(run(args), watchdog=int(200 + 3 * args.cpu_window), fds=args.conns + args.warm + 100)
    table = benchlib.md_table(
        rows,
        [
            ("server", "server"),
            ("idle conns", "conns"),
            ("RSS base MiB", "rss_base_mib"),
            ("RSS after MiB", "rss_after_mib"),
            ("KiB/conn", "kib_per_conn"),
            ("kB/conn", "kb_per_conn"),
            ("open s", "open_s"),
            ("idle CPU % of a core", "idle_cpu_pct"),
            ("still open", "alive"),
            ("closes", "closes"),
        ],
    )
    c = next((r for r in rows if r["server"] == "chatd"), None)
    note = ""
    for floor in ("floor", "node"):
        f = next((r for r in rows if r["server"] == floor), None)
        if f and c:
            note += (f"\n- chatd/{floor} memory per idle connection = "
                     f"{c['kib_per_conn'] / max(f['kib_per_conn'], 1e-9):.2f}")
    if c:
        note += f"\n- chatd: {c['kib_per_conn']} KiB per authenticated idle connection (goal ≤ 10 KiB)"
        if c.get("idle_cpu_pct") is not None:
            note += f"\n- chatd: idle CPU {c['idle_cpu_pct']}% of a core for {c['conns']:,} connections (goal < 3% at 15,000)"
        note += "\n"
    text = (
        f"{args.conns:,} idle connections after {args.warm} warm-up ones, server on core 0; "
        "chatd connections authenticated (one user each)\n\n" + table + "\n" + note
    )
    print("\n" + text)
    benchlib.save_result({"bench": "idle", "rows": rows}, "idle memory (bench/idle.py)", text, chatd=True)


if __name__ == "__main__":
    main()
