"""Circle fan-out: chatd against the bare websockets floor, in the same run.

50 circles x 100 members (5,000 connections), one sender per circle, 120-byte
message texts, at 20,000 and 50,000 deliveries/s (a delivery = one message frame
received by one member socket, the sender's own included). The server is pinned
to core 0, this generator to core 1. Per rate: warm-up, then a fixed window in
which we measure achieved deliveries/s, send->deliver latency p50/p99, server CPU
per delivery (/proc/<pid>/stat utime+stime, all threads and children) and the
generator's own CPU.

The floor server broadcasts frames shaped like chatd's ``msg`` push (same keys,
same size), so both servers move the same bytes.

    .venv/bin/python bench/fanout.py            # full: ~2 min
    .venv/bin/python bench/fanout.py --quick    # ~20 s, 500 connections
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import benchlib
import orjson
import uvloop
import wsload


class Target:
    """One server under test, with its connections, grouped by circle."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: Any = None
        self.port = 0
        self.stats = wsload.Stats()
        self.circles: list[list[wsload.WSConn]] = []
        self.convs: list[str] = []
        self.send: Callable[[int, int], None] = lambda c, n: None
        self.setup_s = 0.0
        self.tmp: tempfile.TemporaryDirectory[str] | None = None

    def senders(self) -> list[int]:
        return list(range(len(self.circles)))

    def close(self) -> None:
        for circle in self.circles:
            for c in circle:
                c.abort()
        if self.proc is not None:
            benchlib.stop_server(self.proc)
        if self.tmp is not None:
            self.tmp.cleanup()


async def settle(st: wsload.Stats, quiet: float = 0.7, limit: float = 60.0) -> None:
    """Wait until no frame has arrived for ``quiet`` seconds."""
    deadline = time.monotonic() + limit
    last = -1
    while time.monotonic() < deadline:
        n = st.frames
        if n == last:
            return
        last = n
        await asyncio.sleep(quiet)


def push_like(conv: str, seq: int, user: str, text: str, cid: str) -> bytes:
    """A frame shaped like chatd's msg push (floor runs send this verbatim)."""
    return orjson.dumps(
        {
            "push": "msg",
            "d": {
                "conv": conv,
                "seq": seq,
                "pos": 100_000 + seq,
                "ts": time.time_ns() // 1_000_000,
                "from": user,
                "author": {"name": user, "type": "owner", "badges": [], "roles": []},
                "kind": "text",
                "text": text,
                "cid": cid,
            },
        }
    )


async def setup_floor(t: Target, circles: int, members: int, size: int) -> None:
    t.port = benchlib.free_port()
    t.proc = benchlib.start_server(
        [sys.executable, str(benchlib.BENCH / "floor_server.py"), "--port", str(t.port)], core=0, name="floor"
    )
    await benchlib.wait_healthz(t.port, 20, t.proc)
    t0 = time.monotonic()
    conns = await wsload.connect_many(
        circles * members,
        lambda i: wsload.connect(t.stats, benchlib.HOST, t.port, f"/room/{i // members}"),
    )
    t.circles = [conns[c * members : (c + 1) * members] for c in range(circles)]
    t.convs = [f"c:{c + 1}" for c in range(circles)]
    users = [f"f{c}_0" for c in range(circles)]

    def send(c: int, n: int) -> None:
        text = wsload.make_text(size)
        t.circles[c][0].write_frame(push_like(t.convs[c], n, users[c], text, f"{c}-{n}"))

    t.send = send
    await settle(t.stats)
    t.setup_s = time.monotonic() - t0


async def setup_chatd(t: Target, circles: int, members: int, size: int, proto: str, extra: list[str]) -> None:
    t.tmp = tempfile.TemporaryDirectory(prefix="bench-chatd-")
    t.port = benchlib.free_port()
    t.proc = benchlib.start_chatd(t.port, os.path.join(t.tmp.name, "chatd.db"), extra)
    await benchlib.wait_healthz(t.port, 30, t.proc)
    t0 = time.monotonic()
    tokens = benchlib.Tokens()
    users = [f"f{i // members}_{i % members}" for i in range(circles * members)]
    conns = await wsload.connect_many(
        len(users), lambda i: benchlib.chatd_client(t.stats, t.port, users[i], tokens.get(users[i]), proto)
    )
    t.circles = [conns[c * members : (c + 1) * members] for c in range(circles)]
    reps = await asyncio.gather(
        *(
            circle[0].request("circle.create", {"name": f"bench {c}", "category": "interest"})
            for c, circle in enumerate(t.circles)
        )
    )
    t.convs = [benchlib.check_reply(r, "circle.create")["conv"] for r in reps]
    sem = asyncio.Semaphore(200)

    async def join(conn: wsload.WSConn, conv: str) -> None:
        async with sem:
            benchlib.check_reply(await asyncio.wait_for(conn.request("circle.join", {"conv": conv}), 60), "join")

    await asyncio.gather(*(join(conn, t.convs[c]) for c, circle in enumerate(t.circles) for conn in circle[1:]))
    ids = itertools.count(1_000_000)

    def send(c: int, n: int) -> None:
        text = wsload.make_text(size)
        i = next(ids)  # request id and cid unique for the run: a repeated cid is an idempotent retry
        t.circles[c][0].send_obj({"id": i, "op": "send", "d": {"conv": t.convs[c], "cid": f"b{i}", "text": text}})

    t.send = send
    await settle(t.stats)
    t.setup_s = time.monotonic() - t0


async def drive(t: Target, msgs_per_s: float, stop: asyncio.Event, counter: list[int]) -> None:
    """Open loop: send ``msgs_per_s`` in total, round-robin over the circles' senders."""
    n_circles = len(t.circles)
    t0 = time.monotonic()
    sent = 0
    k = 0
    seq = [0] * n_circles
    while not stop.is_set():
        await asyncio.sleep(0.002)
        due = int((time.monotonic() - t0) * msgs_per_s) - sent
        for _ in range(due):
            seq[k] += 1
            t.send(k, seq[k])
            k = (k + 1) % n_circles
        sent += due
        counter[0] += due


async def phase(t: Target, rate: int, members: int, warmup: float, window: float) -> dict[str, Any]:
    st = t.stats
    pid = t.proc.pid
    closes0, lost0, errors0 = Counter(st.closes), st.lost, Counter(st.errors)
    await benchlib.wait_quiet(30, server_pid=pid)
    all0, replies0, dups0 = st.all_deliveries, st.replies, st.dups
    stop = asyncio.Event()
    sent = [0]
    task = asyncio.create_task(drive(t, rate / members, stop, sent))
    await asyncio.sleep(warmup)
    st.reset_window()
    st.recording = True
    su0, ss0 = benchlib.cpu_times(pid)
    g0, w0 = wsload.cpu_seconds(), time.monotonic()
    others = benchlib.OtherLoad(pid)
    sent0 = sent[0]
    await asyncio.sleep(window)
    st.recording = False
    su1, ss1 = benchlib.cpu_times(pid)
    g1, w1 = wsload.cpu_seconds(), time.monotonic()
    other_pct, steal_pct = others.pct()
    sent_w = sent[0] - sent0
    deliveries, nbytes, lat = st.deliveries, st.bytes, st.lat
    stop.set()
    await task
    # drain: let in-flight deliveries arrive, then check nothing was lost
    last = -1
    for _ in range(50):
        if st.all_deliveries == last:
            break
        last = st.all_deliveries
        await asyncio.sleep(0.2)
    el = w1 - w0
    d = max(deliveries, 1)
    closes = st.closes - closes0
    errors = st.errors - errors0
    row = {
        "server": t.name,
        "target_dps": rate,
        "achieved_dps": round(deliveries / el),
        "offered_dps": round(sent_w * members / el),
        **wsload.lat_summary_ms(lat),
        "server_us_per_delivery": round(1e6 * ((su1 - su0) + (ss1 - ss0)) / d, 2),
        "server_user_us": round(1e6 * (su1 - su0) / d, 2),
        "server_sys_us": round(1e6 * (ss1 - ss0) / d, 2),
        "server_cpu_pct": round(100 * ((su1 - su0) + (ss1 - ss0)) / el, 1),
        "gen_cpu_pct": round(100 * (g1 - g0) / el, 1),
        "other_pct": other_pct,
        "steal_pct": steal_pct,
        "frame_bytes": round(nbytes / d),
        "delivered_pct": round(100 * (st.all_deliveries - all0) / max(sent[0] * members, 1), 2),
        "sent": sent[0],
        "acks": (st.replies - replies0) if t.name == "chatd" else None,
        "dup_acks": (st.dups - dups0) or None,
        "closes": dict(closes) or None,
        "lost": (st.lost - lost0) or None,
        "errors": dict(errors) or None,
    }
    print(
        f"  {t.name:5} {rate:>7,}/s: achieved {row['achieved_dps']:>7,}/s  p50 {row['p50_ms']} ms  "
        f"p99 {row['p99_ms']} ms  server {row['server_us_per_delivery']} µs/delivery "
        f"({row['server_cpu_pct']}% core)  generator {row['gen_cpu_pct']}%  "
        f"others {other_pct}%  delivered {row['delivered_pct']}% (sent {sent[0]}, acks {row['acks']})  frame {row['frame_bytes']} B"
        + (f"  closes {row['closes']}" if row["closes"] else "")
        + (f"  lost {row['lost']}" if row["lost"] else "")
        + (f"  errors {row['errors']}" if row["errors"] else ""),
        flush=True,
    )
    return row


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in args.targets:
        t = Target(name)
        try:
            print(f"{name}: {args.circles} circles x {args.members} members", flush=True)
            if name == "floor":
                await setup_floor(t, args.circles, args.members, args.size)
            else:
                await setup_chatd(t, args.circles, args.members, args.size, args.proto, args.chatd_arg)
            print(f"  setup {t.setup_s:.1f} s, server RSS {benchlib.rss_kb(t.proc.pid) / 1024:.0f} MiB", flush=True)
            for rate in args.rates:
                rows.append(await phase(t, rate, args.members, args.warmup, args.window))
                if t.proc.poll() is not None:
                    print(f"  !! {name} exited ({t.proc.returncode}):\n{benchlib.log_tail(t.proc)}")
                    break
            if name == "chatd":
                tail = benchlib.log_tail(t.proc, 200)
                warn = [ln for ln in tail.splitlines() if "WARNING" in ln or "ERROR" in ln or "Traceback" in ln]
                if warn:
                    print("  chatd log warnings/errors (last 200 lines):\n    " + "\n    ".join(warn[-10:]))
        finally:
            t.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 circles x 50, 5k and 10k/s, 3 s windows")
    ap.add_argument("--target", choices=["both", "floor", "chatd"], default="both")
    ap.add_argument("--circles", type=int)
    ap.add_argument("--members", type=int)
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], help="deliveries/s, e.g. 20000,50000")
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--window", type=float)
    ap.add_argument("--size", type=int, default=120, help="message text bytes (120)")
    ap.add_argument("--proto", choices=["json", "msgpack"], default="json", help="chatd subprotocol")
    ap.add_argument("--chatd-arg", action="append", default=[], help="extra argument for chatd serve")
    args = ap.parse_args()
    q = args.quick
    args.circles = args.circles or (10 if q else 50)
    args.members = args.members or (50 if q else 100)
    args.rates = args.rates or ([5_000, 10_000] if q else [20_000, 50_000])
    args.warmup = args.warmup if args.warmup is not None else (1.0 if q else 3.0)
    args.window = args.window or (3.0 if q else 10.0)
    args.targets = ["floor", "chatd"] if args.target == "both" else [args.target]
    if "chatd" in args.targets and not benchlib.chatd_available():
        print("chatd is not installed yet: floor only")
        args.targets.remove("chatd")

    benchlib.install_watchdog(240)
    need = args.circles * args.members + 100
    if wsload.raise_nofile() < need:
        raise SystemExit(f"fd limit too low for {need} connections")
    benchlib.pin_self(1)
    try:
        rows = uvloop.run(run(args))
    finally:
        benchlib.stop_all()
    cols = [
        ("server", "server"),
        ("target/s", "target_dps"),
        ("achieved/s", "achieved_dps"),
        ("p50 ms", "p50_ms"),
        ("p99 ms", "p99_ms"),
        ("max ms", "max_ms"),
        ("server µs/delivery", "server_us_per_delivery"),
        ("user µs", "server_user_us"),
        ("sys µs", "server_sys_us"),
        ("server core %", "server_cpu_pct"),
        ("generator CPU %", "gen_cpu_pct"),
        ("others %", "other_pct"),
        ("frame B", "frame_bytes"),
        ("delivered %", "delivered_pct"),
        ("closes", "closes"),
        ("errors", "errors"),
    ]
    table = benchlib.md_table(rows, cols)
    ratios = []
    for rate in args.rates:
        f = next((r for r in rows if r["server"] == "floor" and r["target_dps"] == rate), None)
        c = next((r for r in rows if r["server"] == "chatd" and r["target_dps"] == rate), None)
        if f and c:
            ratio = c["server_us_per_delivery"] / max(f["server_us_per_delivery"], 1e-9)
            ratios.append(
                f"- {rate:,}/s: chatd/floor CPU per delivery = {ratio:.2f} (goal ≤ 0.7); "
                f"chatd p99 {c['p99_ms']} ms (goal ≤ 15 ms at 50,000/s); "
                f"achieved {c['achieved_dps']:,} vs floor {f['achieved_dps']:,}"
            )
    setup = (
        f"{args.circles} circles x {args.members} members, {args.size}-byte texts, "
        f"warm-up {args.warmup} s, window {args.window} s, server on core 0, generator on core 1"
    )
    text = f"{setup}\n\n{table}\n" + ("\n" + "\n".join(ratios) + "\n" if ratios else "")
    print("\n" + text)
    benchlib.save_result(
        {"bench": "fanout", "setup": setup, "rows": rows, "ratios": ratios},
        "fan-out (bench/fanout.py)",
        text,
        chatd=True,
    )


if __name__ == "__main__":
    main()
