"""Circle fan-out: chatd against two floors, bare websockets and Node's ws, in the same run.

50 circles x 100 members (5,000 connections), one sender per circle, 120-byte
message texts, at 20,000 and 50,000 deliveries/s (a delivery = one message frame
received by one member socket, the sender's own included). The server is pinned
to core 0, this generator to core 1. Per rate: warm-up, then a fixed window in
which we measure achieved deliveries/s, send->deliver latency p50/p99, server CPU
per delivery (/proc/<pid>/stat utime+stime, all threads and children) and the
generator's own CPU.

The floor servers (``floor``: bare Python websockets, ``bench/floor_server.py``;
``node``: Node's ``ws``, ``bench/node/floor_server.js``, its package installed by npm on
first use) broadcast frames shaped like chatd's ``msg`` push (same keys, same size), so
every server moves the same bytes.

``chatd2`` (``--target all`` or ``--target cluster``): two ``chatd serve``
processes on one SQLite file and one redis-server (all three on core 0). Each
circle's members are split half/half between the processes and the circles'
senders alternate, so every message is fanned out locally on one process and
crosses Redis to the other. Its server CPU is the sum over both chatd processes;
Redis' CPU is reported beside it.

``chatd3`` and ``chatd3c`` (``--target bus``, issue 14): three chatd processes (members
split a third each, senders rotating), over one redis-server (``chatd3``) or over a Redis
Cluster of 3 masters and 3 replicas (``chatd3c``, sharded pub/sub: SPUBLISH), every Redis
process on core 0 too; Redis' CPU is summed over the cluster's six processes. The ratio
lines compare chatd3c with chatd3 (goal: ≤ 1.2 for CPU per delivery).

    .venv/bin/python bench/fanout.py               # floor + node + chatd: ~2 min
    .venv/bin/python bench/fanout.py --target all  # floor + node + chatd + chatd2: ~3 min
    .venv/bin/python bench/fanout.py --target bus  # chatd3 (one Redis) + chatd3c (Redis Cluster): ~2 min
    .venv/bin/python bench/fanout.py --quick       # ~20 s, 500 connections
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import benchlib
import wsload
from fanout_targets import BUS, FLOORS, NODES, TARGETS, Target, counters, drive, setup_chatd, setup_floor


def report_profiles(spies: list[tuple[int, Path, Any]], name: str, rate: int, wait: float) -> None:
    for i, (pid, out, spy) in enumerate(spies):
        try:
            spy.wait(wait)
        except Exception:
            spy.kill()
        summ = benchlib.profile_summary(out, 25)
        lines = [f"  profile {name} {rate:,}/s process {i} (pid {pid}): {summ['samples']} samples -> {out}"]
        lines += ["    self:"] + [f"      {pct:5.1f}%  {fn}" for fn, pct in summ["self"]]
        lines += ["    inclusive:"] + [f"      {pct:5.1f}%  {fn}" for fn, pct in summ["inclusive"]]
        print("\n".join(lines), flush=True)
        with open(out.parent / "summary.txt", "a") as f:
            f.write("\n".join(lines) + "\n")


def report_perf(perf: Any, data: Path, t: Target, rate: int, wait: float) -> None:
    try:
        perf.wait(wait)
    except Exception:
        perf.kill()
    redis = t.redis_pids()
    names = ", ".join(
        [f"chatd process {i}: pid {p}" for i, p in enumerate(t.pids())]
        + ([f"redis: pid {redis[0]}"] if len(redis) == 1 else [f"redis node {i}: pid {p}" for i, p in enumerate(redis)])
    )
    text = f"perf {t.name} {rate:,}/s ({names}):\n" + benchlib.perf_summary(data)
    data.with_suffix(".txt").write_text(text + "\n")
    print("  " + text.replace("\n", "\n  "), flush=True)


async def phase(
    t: Target, rate: int, members: int, warmup: float, window: float, args: argparse.Namespace | None = None
) -> dict[str, Any]:
    st = t.stats
    pids = t.pids()
    closes0, lost0, errors0 = Counter(st.closes), st.lost, Counter(st.errors)
    await benchlib.wait_quiet(30, server_pid=t.all_pids())
    all0, replies0, dups0 = st.all_deliveries, st.replies, st.dups
    stop = asyncio.Event()
    sent = [0]
    task = asyncio.create_task(drive(t, rate / members, stop, sent))
    await asyncio.sleep(warmup)
    k0 = counters(t)
    st.reset_window()
    st.recording = True
    w = benchlib.Window(pids, t.redis_pids(), per_process=len(pids) > 1, ctx=True).start()
    sent0 = sent[0]
    spies: list[tuple[int, Path, Any]] = []
    if args is not None and args.profile and t.name.startswith("chatd"):
        for i, p in enumerate(pids):
            out = Path(args.profile) / f"{t.name}-{rate}-p{i}.txt"
            spies.append((p, out, benchlib.start_profile(args.py_spy, p, window, out)))
    perf = None
    if args is not None and args.perf:
        perf_out = Path(args.perf) / f"{t.name}-{rate}.data"
        perf = benchlib.start_perf(t.all_pids(), window, perf_out)
    await asyncio.sleep(window)
    st.recording = False
    w.stop()
    sent_w = sent[0] - sent0
    k1 = counters(t)
    k = {name: k1.get(name, 0) - k0.get(name, 0) for name in k1}
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
    if spies:
        report_profiles(spies, t.name, rate, window + 15)
    if perf is not None:
        report_perf(perf, perf_out, t, rate, window + 15)
    el = w.elapsed
    d = max(deliveries, 1)
    closes = st.closes - closes0
    errors = st.errors - errors0
    msgs = max(k.get("messages", 0), 1)
    cluster = bool(t.redis_pids())  # several chatd processes over Redis (one server or a Redis Cluster)
    row = {
        "server": t.name,
        "processes": len(t.procs),
        "target_dps": rate,
        "achieved_dps": round(deliveries / el),
        "offered_dps": round(sent_w * members / el),
        **wsload.lat_summary_ms(lat),
        "server_us_per_delivery": round(1e6 * w.server / d, 2),
        "server_user_us": round(1e6 * w.user / d, 2),
        "server_sys_us": round(1e6 * w.sys / d, 2),
        "server_cpu_pct": w.pct(w.server),
        "node_cpu_pct": " / ".join(f"{100 * n / el:.0f}" for n in w.nodes) if len(pids) > 1 else None,
        "redis_us_per_delivery": round(1e6 * w.redis_cpu / d, 2) if cluster else None,
        "redis_cpu_pct": w.pct(w.redis_cpu) if cluster else None,
        "total_us_per_delivery": round(1e6 * (w.server + w.redis_cpu) / d, 2),
        "core0_pct": w.pct(w.server + w.redis_cpu),
        "gen_cpu_pct": w.pct(w.gen),
        "other_pct": w.other_pct,
        "steal_pct": w.steal_pct,
        "frame_bytes": round(nbytes / d),
        "delivered_pct": round(100 * (st.all_deliveries - all0) / max(sent[0] * members, 1), 2),
        "sent": sent[0],
        "acks": (st.replies - replies0) if t.name.startswith("chatd") else None,
        "dup_acks": (st.dups - dups0) or None,
        "closes": dict(closes) or None,
        "lost": (st.lost - lost0) or None,
        "errors": dict(errors) or None,
    }
    if t.name.startswith("chatd"):
        row.update(
            {
                "msgs_per_commit": round(k.get("messages", 0) / max(k.get("commits", 0), 1), 1),
                "ctx_per_msg": round(w.ctx_switches / msgs, 2),
                "redis_ctx_per_msg": round(w.redis_ctx_switches / msgs, 2) if cluster else None,
                "commit_ms": round(1e3 * k.get("commit_s", 0) / max(k.get("commits", 0), 1), 2),
            }
        )
    if cluster:
        row.update(
            {
                "bus_published_per_msg": round(k.get("published", 0) / msgs, 2),
                "bus_received_per_msg": round(k.get("received", 0) / msgs, 2),
                "bus_dropped": int(k.get("dropped", 0)) or None,
                "gaps_filled": int(k.get("gaps_filled", 0)) or None,
                "redis_publish_per_msg": round(k.get("redis_publish_calls", 0) / msgs, 2),
                "redis_publish_usec": round(
                    k.get("redis_publish_usec", 0) / max(k.get("redis_publish_calls", 0), 1), 2
                ),
                "redis_cmds": int(k.get("redis_cmd_calls", 0)),
            }
        )
    if t.cluster is not None:
        row.update(
            {
                "redis_processes": len(t.redis_pids()),
                "redis_master_publish_per_msg": round(k.get("redis_master_publish_calls", 0) / msgs, 2),
            }
        )
    print(
        f"  {t.name:6} {rate:>7,}/s: achieved {row['achieved_dps']:>7,}/s  p50 {row['p50_ms']} ms  "
        f"p99 {row['p99_ms']} ms  max {row['max_ms']} ms  server {row['server_us_per_delivery']} µs/delivery "
        f"({row['server_cpu_pct']}% core"
        + (f"; per process {row['node_cpu_pct']}" if row["node_cpu_pct"] else "")
        + ")"
        + (f"  redis {row['redis_us_per_delivery']} µs/delivery ({row['redis_cpu_pct']}%)" if cluster else "")
        + f"  generator {row['gen_cpu_pct']}%  "
        f"others {w.other_pct}%  delivered {row['delivered_pct']}% (sent {sent[0]}, acks {row['acks']})  frame {row['frame_bytes']} B"
        + (f"  closes {row['closes']}" if row["closes"] else "")
        + (f"  lost {row['lost']}" if row["lost"] else "")
        + (f"  errors {row['errors']}" if row["errors"] else ""),
        flush=True,
    )
    if t.name.startswith("chatd"):
        row["details"] = details(row)
        print("         " + row["details"], flush=True)
    return row


def details(row: dict[str, Any]) -> str:
    """The chatd counters of a row, as one line."""
    cluster = row.get("redis_us_per_delivery") is not None
    return (
        f"{row['msgs_per_commit']} msgs/commit, {row['commit_ms']} ms/commit, "
        f"{row['ctx_per_msg']} context switches/message (chatd"
        + (f"; redis {row['redis_ctx_per_msg']})" if cluster else ")")
        + (
            f"; bus: {row['bus_published_per_msg']} envelopes published and {row['bus_received_per_msg']} "
            f"received per message, Redis {row['redis_publish_per_msg']} PUBLISH/message at "
            f"{row['redis_publish_usec']} µs each (in-command time), {row['redis_cmds']} commands in all"
            + (
                f" (PUBLISH + SPUBLISH summed over the cluster's {row['redis_processes']} nodes; "
                f"{row['redis_master_publish_per_msg']}/message on the masters)"
                if row.get("redis_processes")
                else ""
            )
            + (f", dropped {row['bus_dropped']}" if row["bus_dropped"] else "")
            + (f", gaps filled {row['gaps_filled']}" if row["gaps_filled"] else "")
            if cluster
            else ""
        )
    )


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in args.targets:
        t = Target(name)
        try:
            print(f"{name}: {args.circles} circles x {args.members} members", flush=True)
            if name in FLOORS:
                await setup_floor(t, args.circles, args.members, args.size)
            else:
                await setup_chatd(
                    t,
                    args.circles,
                    args.members,
                    args.size,
                    args.proto,
                    args.chatd_arg,
                    nodes=NODES[name],
                    split=args.split,
                    bus=BUS.get(name, "redis"),
                )
            rss = sum(benchlib.rss_kb(p) for p in t.all_pids()) / 1024
            print(f"  setup {t.setup_s:.1f} s, server RSS {rss:.0f} MiB", flush=True)
            for rate in args.rates:
                rows.append(await phase(t, rate, args.members, args.warmup, args.window, args))
                dead = t.exited()
                if dead is not None:
                    print(f"  !! {name}: pid {dead.pid} exited ({dead.returncode}):\n{benchlib.log_tail(dead)}")
                    break
            if name.startswith("chatd"):
                benchlib.print_log_warnings(t.procs)
        finally:
            t.close()
    return rows


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 circles x 50, 5k and 10k/s, 3 s windows")
    ap.add_argument(
        "--target",
        choices=list(TARGETS),
        default="both",
        help="both = floor + node + chatd; all = floor + node + chatd + chatd2 (2 processes + Redis); "
        "cluster = chatd + chatd2; bus = chatd3 (3 processes + one Redis) + chatd3c (3 processes + a Redis "
        "Cluster of 3 masters and 3 replicas); floors = floor + node (floor: bare Python websockets, node: Node's ws); "
        "bound = both + raw (raw: bench/raw_floor.py, the least a Python server on uvloop does per delivery)",
    )
    ap.add_argument("--circles", type=int)
    ap.add_argument("--members", type=int)
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], help="deliveries/s, e.g. 20000,50000")
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--window", type=float)
    ap.add_argument("--size", type=int, default=120, help="message text bytes (120)")
    ap.add_argument("--proto", choices=["json", "msgpack"], default="json", help="chatd subprotocol")
    ap.add_argument(
        "--split",
        choices=["member", "circle"],
        default="member",
        help="chatd2: each circle's members half on each process (member, default) or whole circles per process "
        "(circle: an analysis mode where every message is published but needed by no other process)",
    )
    ap.add_argument("--chatd-arg", action="append", default=[], help="extra argument for chatd serve")
    ap.add_argument(
        "--profile",
        metavar="DIR",
        help="sample every chatd process with py-spy during each window (collapsed stacks and a summary in DIR); "
        "py-spy shares core 1 with the generator, so a profiled run is printed, not saved",
    )
    ap.add_argument("--py-spy", help="py-spy binary (default: $PY_SPY or PATH)")
    ap.add_argument(
        "--perf",
        metavar="DIR",
        help="perf record (cpu-clock, call graphs) the chatd processes and Redis during each window; "
        "perf shares core 1 with the generator, so the run is printed, not saved",
    )
    args = ap.parse_args()
    if args.profile:
        args.py_spy = benchlib.py_spy_bin(args.py_spy)
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    if args.perf:
        Path(args.perf).mkdir(parents=True, exist_ok=True)
    q = args.quick
    args.circles = args.circles or (10 if q else 50)
    args.members = args.members or (50 if q else 100)
    args.rates = args.rates or ([5_000, 10_000] if q else [20_000, 50_000])
    args.warmup = args.warmup if args.warmup is not None else (1.0 if q else 3.0)
    args.window = args.window or (3.0 if q else 10.0)
    args.targets = list(TARGETS[args.target])
    if not benchlib.chatd_available():
        print("chatd is not installed yet: floor only")
        args.targets = [n for n in args.targets if n in FLOORS]
    multi = [n for n in args.targets if NODES.get(n, 1) > 1]
    if multi and "--redis-url" not in benchlib.chatd_help():
        print(f"this chatd has no --redis-url: no {', '.join(multi)}")
        args.targets = [n for n in args.targets if n not in multi]
    return args


COLS = [
    ("server", "server"),
    ("target/s", "target_dps"),
    ("achieved/s", "achieved_dps"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("max ms", "max_ms"),
    ("server µs/delivery", "server_us_per_delivery"),
    ("user µs", "server_user_us"),
    ("sys µs", "server_sys_us"),
    ("redis µs/delivery", "redis_us_per_delivery"),
    ("server core %", "server_cpu_pct"),
    ("per process %", "node_cpu_pct"),
    ("redis core %", "redis_cpu_pct"),
    ("generator CPU %", "gen_cpu_pct"),
    ("others %", "other_pct"),
    ("frame B", "frame_bytes"),
    ("delivered %", "delivered_pct"),
    ("closes", "closes"),
    ("errors", "errors"),
]


BUS_ROWS = ("chatd3", "chatd3c")


def bus_ratios(rows: list[dict[str, Any]], rate: int) -> list[str]:
    """chatd3c against chatd3 at ``rate``: chatd's, Redis' and the total CPU per delivery
    of each, and the ratios (issue 14: ≤ 1.2)."""
    one = next((r for r in rows if r["server"] == "chatd3" and r["target_dps"] == rate), None)
    clu = next((r for r in rows if r["server"] == "chatd3c" and r["target_dps"] == rate), None)
    out = []
    for r, what in ((one, "chatd3 (one Redis)"), (clu, "chatd3c (Redis Cluster)")):
        if r:
            out.append(
                f"- {rate:,}/s: {what}: chatd {r['server_us_per_delivery']} + Redis {r['redis_us_per_delivery']} "
                f"= {r['total_us_per_delivery']} µs/delivery; p99 {r['p99_ms']} ms, achieved {r['achieved_dps']:,}/s, "
                f"core 0 {r['core0_pct']}%"
            )
    if one and clu:
        chatd = clu["server_us_per_delivery"] / max(one["server_us_per_delivery"], 1e-9)
        total = clu["total_us_per_delivery"] / max(one["total_us_per_delivery"], 1e-9)
        redis = clu["redis_us_per_delivery"] / max(one["redis_us_per_delivery"], 1e-9)
        out.append(
            f"- {rate:,}/s: Redis Cluster / one Redis (3 processes): chatd CPU per delivery = {chatd:.2f} "
            f"(goal ≤ 1.2), total (chatd + Redis) = {total:.2f} (goal ≤ 1.2); Redis alone {redis:.2f}"
        )
    return out


def report(args: argparse.Namespace, rows: list[dict[str, Any]]) -> tuple[str, list[str], str]:
    """(setup line, ratio lines, the whole text: setup, table, ratios, chatd details)."""
    bus = any(r["server"] in BUS_ROWS for r in rows)
    cols = COLS
    if bus:  # chatd + Redis per delivery, the figure the bus comparison is about
        at = next(i for i, (_, k) in enumerate(COLS) if k == "redis_us_per_delivery") + 1
        cols = [*COLS[:at], ("total µs/delivery", "total_us_per_delivery"), *COLS[at:]]
    table = benchlib.md_table(rows, cols)
    ratios = []
    for rate in args.rates:
        f = next((r for r in rows if r["server"] == "floor" and r["target_dps"] == rate), None)
        c = next((r for r in rows if r["server"] == "chatd" and r["target_dps"] == rate), None)
        c2 = next((r for r in rows if r["server"] == "chatd2" and r["target_dps"] == rate), None)
        nd = next((r for r in rows if r["server"] == "node" and r["target_dps"] == rate), None)
        raw = next((r for r in rows if r["server"] == "raw" and r["target_dps"] == rate), None)
        if raw and nd:
            ratios.append(
                f"- {rate:,}/s: Python lower bound (raw_floor.py)/Node ws CPU per delivery = "
                f"{raw['server_us_per_delivery'] / max(nd['server_us_per_delivery'], 1e-9):.2f}, user time "
                f"{raw['server_user_us'] / max(nd['server_user_us'], 1e-9):.2f}, kernel time "
                f"{raw['server_sys_us'] / max(nd['server_sys_us'], 1e-9):.2f}"
            )
        for floor, label in ((f, "floor (bare websockets)"), (nd, "Node ws")):
            if floor and c:
                ratio = c["server_us_per_delivery"] / max(floor["server_us_per_delivery"], 1e-9)
                user = c["server_user_us"] / max(floor["server_user_us"], 1e-9)
                ratios.append(
                    f"- {rate:,}/s: chatd/{label} CPU per delivery = {ratio:.2f} (goal ≤ 0.9), user time "
                    f"{user:.2f}; chatd p99 {c['p99_ms']} ms (goal ≤ 10 ms at 50,000/s); "
                    f"achieved {c['achieved_dps']:,} vs {floor['achieved_dps']:,}"
                )
        if c and c2:
            ratio = c2["server_us_per_delivery"] / max(c["server_us_per_delivery"], 1e-9)
            ratio_r = c2["total_us_per_delivery"] / max(c["server_us_per_delivery"], 1e-9)
            ratios.append(
                f"- {rate:,}/s: 2-process/1-process chatd CPU per delivery = {ratio:.2f} (goal ≤ 1.2), "
                f"{ratio_r:.2f} with Redis' CPU added; "
                f"2-process p99 {c2['p99_ms']} ms"
                + (" (goal ≤ 20 ms at 20,000/s)" if rate == 20_000 else "")
                + f"; achieved {c2['achieved_dps']:,} vs 1 process {c['achieved_dps']:,}"
                + f"; core 0 (chatd + redis) {c2['core0_pct']}% vs {c['core0_pct']}%"
            )
        ratios += bus_ratios(rows, rate)
    setup = (
        f"{args.circles} circles x {args.members} members, {args.size}-byte texts, "
        f"warm-up {args.warmup} s, window {args.window} s, server on core 0, generator on core 1"
        + (
            "; chatd2 = 2 chatd processes (one SQLite file) + redis-server, all on core 0, "
            + (
                "each circle's members and the senders split half/half between the processes"
                if args.split == "member"
                else "each circle whole on one process, circles alternating (--split circle, an analysis mode: "
                "every message is published, none is needed by the other process)"
            )
            if "chatd2" in args.targets
            else ""
        )
        + (
            "; chatd3 = 3 chatd processes (one SQLite file) + one redis-server, chatd3c = 3 chatd processes + "
            "a Redis Cluster (3 masters + 3 replicas, sharded pub/sub), every process on core 0, "
            + (
                "each circle's members and the senders split a third each"
                if args.split == "member"
                else "each circle whole on one process (--split circle)"
            )
            + " (redis µs: summed over the cluster's 6 processes)"
            if bus
            else ""
        )
        + (f"; chatd args: {' '.join(args.chatd_arg)}" if args.chatd_arg else "")
    )
    detail_lines = [f"- {r['server']} {r['target_dps']:,}/s: {r['details']}" for r in rows if r.get("details")]
    text = (
        f"{setup}\n\n{table}\n"
        + ("\n" + "\n".join(ratios) + "\n" if ratios else "")
        + ("\n" + "\n".join(detail_lines) + "\n" if detail_lines else "")
    )
    return setup, ratios, text


def main() -> None:
    args = parse_args()
    # ~40 s per target (setup, a warm-up and a window per rate, drains) on the full run
    per_target = 15 + len(args.rates) * (args.warmup + args.window + 8)
    watchdog = max(240, int(120 + len(args.targets) * per_target * 1.5))
    rows = benchlib.run_pinned(run(args), watchdog, fds=args.circles * args.members + 100)
    setup, ratios, text = report(args, rows)
    print("\n" + text)
    if args.profile or args.perf:
        print(f"  profiled run: not saved (profiles in {args.profile or args.perf})")
        return
    benchlib.save_result(
        {"bench": "fanout", "setup": setup, "rows": rows, "ratios": ratios},
        "fan-out (bench/fanout.py)",
        text,
        chatd=True,
    )


if __name__ == "__main__":
    main()
