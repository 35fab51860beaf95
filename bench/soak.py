"""Soak with connection churn: does chatd's memory or fd count creep over an hour?

One ``chatd serve`` process (on a fresh SQLite file, with a ``redis-server`` as its bus
unless ``--no-redis``), pinned to core 0 with Redis; this generator on core 1. Load:

- a steady population (``--steady`` sockets, 300) in ``--circles`` circles (10), each
  circle with ``--senders`` senders; together they send ``--rate`` messages/s (200),
  every member socket receives every message of its circle (marker texts: latency
  without decoding, see wsload.py). A steady socket that drops is opened again;
- churners: ``--churn`` new connections a second (5), each of a user from a pool of
  ``--pool`` (1,000) ids: connect, auth, join one of ``--churn-circles`` circles, read its
  ``history``, ``presence.sub`` to 5 steady users, send one message, receive for
  ``--churn-life`` s (10, times 0.5 to 1.5), leave the circle, and close (two in three with a
  close frame, one in three by aborting the TCP connection).

``--churn-ops`` takes some of those steps away (``--churn-ops ""``: connect, auth, wait,
close), to tell which one memory grows with.

Every ``--sample`` s (5) it reads chatd's (and Redis') VmRSS from /proc/PID/status (and
chatd's RssAnon and RssFile: heap or mapped files) and counts /proc/PID/fd, with the generator's counts, into a JSONL file
(``--samples-out``, default results/<UTC date>-soak-<duration>s.jsonl). At the end of the
warm-up (``--warmup``, 600 s; a third of a shorter run) and at the end of the run it holds
a *quiet checkpoint*: no new churners until every churner has gone, then fds and RSS with
only the steady population connected. The two checkpoints are the fd comparison: at the
same population the count must be the same (goal: no leak). RSS after the warm-up:
first/last/min/max, the drift against the first minute's median (goal: every sample
within 5 %), a least-squares slope in MiB/h and the curve in twelve slices.

    nice -n 10 .venv/bin/python bench/soak.py                 # one hour
    nice -n 10 .venv/bin/python bench/soak.py --duration 300  # a 5 min check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import os
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import benchlib
import wsload

HOST = benchlib.HOST
JSON = ("chatd.v1.json",)
RSS_GOAL_PCT = 5.0


def vm_rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory line of /proc/PID/status in KiB: VmRSS, or its parts RssAnon (heap), RssFile."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def fd_kinds(pid: int) -> dict[str, int]:
    """What the fds point at: socket, anon_inode:[eventpoll], a file path (db, wal, ...)."""
    out: Counter[str] = Counter()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            out["socket" if target.startswith("socket:") else target.rsplit("/", 1)[-1]] += 1
    except OSError:
        pass
    return dict(out)


async def stable_fds(pid: int, reads: int = 5) -> tuple[int, dict[str, int]]:
    """The fd count and kinds at a quiet moment: the least of a few reads 0.5 s apart
    (a health or metrics request's socket may be open during one; a leak is in all)."""
    best = (fd_count(pid), fd_kinds(pid))
    for _ in range(reads - 1):
        await asyncio.sleep(0.5)
        now = (fd_count(pid), fd_kinds(pid))
        if now[0] < best[0]:
            best = now
    return best


def open_samples(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w")


def swallow(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class Soak:
    def __init__(self, args: argparse.Namespace, port: int, tokens: benchlib.Tokens) -> None:
        self.args = args
        self.port = port
        self.tokens = tokens
        self.st = wsload.Stats()  # the steady population: marker deliveries, latency
        self.st.recording = True
        self.cst = wsload.Stats()  # churners
        self.steady: list[Any] = []  # WSConn per steady user (replaced when it drops)
        self.steady_conv: list[str] = []
        self.churn_convs: list[str] = []
        self.senders: list[int] = []
        self.sent = self.acked = self.send_errors = 0
        self.reopened = 0
        self.churn_started = self.churn_done = self.churn_failed = 0
        self.churn_open = 0
        self.churn_fail_why: Counter[str] = Counter()
        self.churning = True
        self.stop = False
        self.tokens_cache: dict[str, str] = {}
        self.idle = asyncio.Event()  # set while no churner is open

    # -- set-up ------------------------------------------------------------------

    async def open_steady(self, i: int) -> Any:
        user = f"st{i}"
        return await benchlib.chatd_client(self.st, self.port, user, self.tokens.get(user))

    async def setup(self) -> None:
        a = self.args
        self.steady = await wsload.connect_many(a.steady, self.open_steady, concurrency=50)
        per = a.steady // a.circles
        owners = [self.steady[c * per] for c in range(a.circles)]
        for c, o in enumerate(owners):
            d = benchlib.check_reply(
                await o.request("circle.create", {"name": f"soak {c}", "category": "interest"}), "create"
            )
            self.steady_conv += [d["conv"]] * per
        self.steady_conv += [self.steady_conv[-1]] * (a.steady - len(self.steady_conv))
        for i, conn in enumerate(self.steady):
            if i % per or i >= per * a.circles:
                benchlib.check_reply(await conn.request("circle.join", {"conv": self.steady_conv[i]}), "join")
        self.senders = [i for i in range(a.steady) if i % per < a.senders]
        # the churners' circles belong to an owner of their own, who stays
        self.churn_owner = await benchlib.chatd_client(self.cst, self.port, "churnowner", self.tokens.get("churnowner"))
        for c in range(a.churn_circles):
            d = benchlib.check_reply(
                await self.churn_owner.request("circle.create", {"name": f"churn {c}", "category": "interest"}),
                "create",
            )
            self.churn_convs.append(d["conv"])
        for u in range(a.pool):  # tokens minted once, not per connection
            self.tokens_cache[f"ch{u}"] = self.tokens.get(f"ch{u}")

    # -- load --------------------------------------------------------------------

    async def send_loop(self) -> None:
        a = self.args
        t0 = time.monotonic()
        k = 0
        made = 0
        while not self.stop:
            await asyncio.sleep(0.01)
            due = int((time.monotonic() - t0) * a.rate) - made
            for _ in range(due):
                i = self.senders[k % len(self.senders)]
                k += 1
                conn = self.steady[i]
                if conn.closed:
                    continue
                fut = conn.request(
                    "send", {"conv": self.steady_conv[i], "cid": f"s{k}", "text": wsload.make_text(a.size)}
                )
                fut.add_done_callback(self._acked)
                self.sent += 1
            made += due

    def _acked(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.send_errors += 1
        elif "error" in fut.result():
            self.send_errors += 1
        else:
            self.acked += 1

    async def keep_steady(self) -> None:
        """A steady socket that dropped (a 4001, say) is opened again, so the population stays."""
        while not self.stop:
            await asyncio.sleep(1.0)
            for i, conn in enumerate(self.steady):
                if conn.closed and not self.stop:
                    try:
                        self.steady[i] = await self.open_steady(i)
                        self.reopened += 1
                    except (OSError, RuntimeError, TimeoutError, ConnectionError):
                        pass

    async def churn_loop(self) -> None:
        a = self.args
        t0 = time.monotonic()
        made = 0
        tasks: set[asyncio.Task[None]] = set()
        while not self.stop:
            await asyncio.sleep(0.02)
            if not self.churning:
                t0, made = time.monotonic(), 0
                continue
            due = int((time.monotonic() - t0) * a.churn) - made
            for _ in range(due):
                t = asyncio.get_running_loop().create_task(self.churner(self.churn_started))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                self.churn_started += 1
            made += due
        for t in list(tasks):
            t.cancel()

    async def churner(self, k: int) -> None:
        a = self.args
        user = f"ch{k % a.pool}"
        conv = self.churn_convs[k % len(self.churn_convs)]
        conn = None
        self.churn_open += 1
        self.idle.clear()
        try:
            conn = await wsload.connect(self.cst, HOST, self.port, "/", JSON)

            async def call(op: str, d: dict[str, Any], ok: tuple[str, ...] = ()) -> dict[str, Any]:
                assert conn is not None
                rep = await asyncio.wait_for(conn.request(op, d), 20)
                if "error" in rep and rep["error"].get("code") not in ok:
                    raise RuntimeError(f"{op}: {rep['error'].get('code')}")
                return dict(rep)

            ops = a.churn_ops
            await call("auth", {"token": self.tokens_cache[user]})
            if "join" in ops:
                await call("circle.join", {"conv": conv}, ok=("conflict",))  # another device of the user holds it
            if "history" in ops:
                await call("history", {"conv": conv, "limit": 20})
            if "presence" in ops:
                watch = random.sample(range(len(self.steady)), 5)
                await call("presence.sub", {"users": [f"st{i}" for i in watch]})
            if "send" in ops and "join" in ops:
                await call("send", {"conv": conv, "cid": f"{user}-{k}", "text": f"churner {k} says hi"})
            await asyncio.sleep(a.churn_life * random.uniform(0.5, 1.5))
            if "join" in ops:
                await call("circle.leave", {"conv": conv}, ok=("not_member",))
            self.churn_done += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # counted, the soak goes on
            self.churn_failed += 1
            self.churn_fail_why[type(exc).__name__ + ": " + str(exc)[:60]] += 1
        finally:
            self.churn_open -= 1
            if not self.churn_open:
                self.idle.set()
            if conn is not None:
                if k % 3 == 2:
                    conn.abort()
                else:
                    conn.close()

    async def quiet(self, within: float = 90.0) -> float:
        """Stop starting churners and wait until the last one is gone; seconds it took."""
        self.churning = False
        t0 = time.monotonic()
        if self.churn_open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), within)
        await asyncio.sleep(3.0)  # the server notices the last closes
        return time.monotonic() - t0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-soak-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    extra = ["--circles-per-hour", "0", "--new-dms-per-hour", "0", "--log-level", "warning"]
    redis = None
    if args.redis:
        redis, redis_port = benchlib.start_redis(core=0)
        extra += ["--redis-url", f"redis://{HOST}:{redis_port}/0"]
    port = benchlib.free_port()
    chatd = benchlib.start_chatd(port, str(tmp / "chatd.db"), extra)
    await benchlib.wait_healthz(port, 30, chatd)
    out_path = Path(args.samples_out)
    out = open_samples(out_path)
    soak = Soak(args, port, benchlib.Tokens())
    print(f"  setting up {args.steady} steady sockets in {args.circles} circles ...", flush=True)
    await soak.setup()
    print(
        f"  load: {args.rate} msg/s from {len(soak.senders)} senders, churn {args.churn}/s, for {args.duration} s "
        f"(warm-up {args.warmup} s); samples to {out_path}",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(c) for c in (soak.send_loop(), soak.keep_steady(), soak.churn_loop())]
    samples: list[dict[str, Any]] = []
    checkpoints: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    cpu0 = benchlib.cpu_times(chatd.pid)
    gen0 = wsload.cpu_seconds()
    last = {"t": 0.0, "deliveries": 0, "sent": 0, "cpu": sum(cpu0), "gen": gen0}

    def sample(phase: str) -> dict[str, Any]:
        now = time.monotonic() - t0
        cpu = sum(benchlib.cpu_times(chatd.pid))
        gen = wsload.cpu_seconds()
        dt = max(now - last["t"], 1e-6)
        lat = sorted(soak.st.lat)
        soak.st.lat = []
        fds = fd_count(chatd.pid)  # before the /metrics request adds a socket
        try:
            conns = int(benchlib.scrape_metrics(port).get("chatd_connections", -1))
        except OSError:
            conns = -1
        rec = {
            "t": round(now, 1),
            "phase": phase,
            "rss_kb": vm_rss_kb(chatd.pid),
            "rss_anon_kb": vm_rss_kb(chatd.pid, "RssAnon"),
            "rss_file_kb": vm_rss_kb(chatd.pid, "RssFile"),
            "fds": fds,
            "redis_rss_kb": vm_rss_kb(redis.pid) if redis else None,
            "redis_fds": fd_count(redis.pid) if redis else None,
            "chatd_connections": conns,
            "steady_open": sum(1 for c in soak.steady if not c.closed),
            "churners_open": soak.churn_open,
            "churn_started": soak.churn_started,
            "churn_done": soak.churn_done,
            "churn_failed": soak.churn_failed,
            "sent": soak.sent,
            "acked": soak.acked,
            "send_errors": soak.send_errors,
            "msg_per_s": round((soak.sent - last["sent"]) / dt, 1),
            "deliveries_per_s": round((soak.st.all_deliveries - last["deliveries"]) / dt, 1),
            "p50_ms": round(wsload.percentile(lat, 0.5) / 1e6, 2) if lat else None,
            "p99_ms": round(wsload.percentile(lat, 0.99) / 1e6, 2) if lat else None,
            "chatd_cpu_pct": round(100 * (cpu - last["cpu"]) / dt, 1),
            "gen_cpu_pct": round(100 * (gen - last["gen"]) / dt, 1),
            "closes": dict(soak.st.closes + soak.cst.closes),
        }
        last.update(t=now, deliveries=soak.st.all_deliveries, sent=soak.sent, cpu=cpu, gen=gen)
        out.write(json.dumps(rec) + "\n")
        out.flush()
        samples.append(rec)
        return rec

    def show(rec: dict[str, Any]) -> None:
        print(
            f"  t={rec['t']:7.0f}s {rec['phase']:11} RSS {rec['rss_kb'] / 1024:7.1f} MiB  fds {rec['fds']:5}  "
            f"conns {rec['chatd_connections']:4} (churners {rec['churners_open']:3})  {rec['msg_per_s']:6.0f} msg/s "
            f"{rec['deliveries_per_s']:7.0f} deliv/s  p99 {rec['p99_ms']} ms  chatd {rec['chatd_cpu_pct']}%  "
            f"gen {rec['gen_cpu_pct']}%  churn {rec['churn_done']}/{rec['churn_started']} failed {rec['churn_failed']}",
            flush=True,
        )

    async def checkpoint(name: str) -> None:
        took = await soak.quiet()
        fds, kinds = await stable_fds(chatd.pid)
        rec = sample(name)
        rec["fds"], rec["fd_kinds"] = fds, kinds
        rec["quiet_wait_s"] = round(took, 1)
        checkpoints[name] = rec
        show(rec)
        print(f"    fds by kind: {rec['fd_kinds']}", flush=True)
        soak.churning = True

    try:
        next_show = 0.0
        warm_done = False
        while True:
            await asyncio.sleep(args.sample)
            el = time.monotonic() - t0
            if chatd.poll() is not None:
                raise RuntimeError(f"chatd exited with {chatd.returncode}:\n{benchlib.log_tail(chatd)}")
            if not warm_done and el >= args.warmup:
                warm_done = True
                await checkpoint("quiet-start")
                continue
            if el >= args.duration:
                await checkpoint("quiet-end")
                break
            rec = sample("steady" if warm_done else "warmup")
            if el >= next_show:
                show(rec)
                next_show = el + 60
    finally:
        soak.stop = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in [*soak.steady, getattr(soak, "churn_owner", None)]:
            if c is not None:
                c.abort()
        out.close()
    benchlib.print_log_warnings([chatd])
    res = summarize(args, samples, checkpoints, soak)
    benchlib.stop_server(chatd)
    if redis is not None:
        benchlib.stop_server(redis)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return res


def summarize(
    args: argparse.Namespace, samples: list[dict[str, Any]], cps: dict[str, dict[str, Any]], soak: Soak
) -> dict[str, Any]:
    steady = [s for s in samples if s["phase"] in ("steady", "quiet-start", "quiet-end")]
    steady = [s for s in steady if s["phase"] == "steady"] or steady
    rss = [s["rss_kb"] for s in steady]
    ts = [s["t"] for s in steady]
    per_min = max(1, round(60 / args.sample))
    base = statistics.median(rss[:per_min])
    lo, hi = min(rss), max(rss)
    drift_last = 100 * (rss[-1] - base) / base
    band_hi, band_lo = 100 * (hi - base) / base, 100 * (lo - base) / base
    slope = 0.0
    if len(ts) > 1:
        mt, mr = statistics.fmean(ts), statistics.fmean(rss)
        den = sum((t - mt) ** 2 for t in ts)
        slope = sum((t - mt) * (r - mr) for t, r in zip(ts, rss, strict=True)) / den if den else 0.0
    slices = 12
    curve = []
    for k in range(slices):
        part = steady[k * len(steady) // slices : (k + 1) * len(steady) // slices]
        if part:
            curve.append(
                {
                    "from_s": part[0]["t"],
                    "to_s": part[-1]["t"],
                    "rss_mib": round(statistics.fmean(p["rss_kb"] for p in part) / 1024, 2),
                    "fds_mean": round(statistics.fmean(p["fds"] for p in part), 1),
                    "redis_rss_mib": round(statistics.fmean(p["redis_rss_kb"] for p in part) / 1024, 2)
                    if part[0]["redis_rss_kb"]
                    else None,
                }
            )
    qs, qe = cps.get("quiet-start", {}), cps.get("quiet-end", {})
    fd_leak = (qe.get("fds", 0) - qs.get("fds", 0)) if qs and qe else None
    same_pop = bool(
        qs and qe and qs["steady_open"] == qe["steady_open"] and qs["chatd_connections"] == qe["chatd_connections"]
    )
    rss_ok = max(abs(band_hi), abs(band_lo)) <= RSS_GOAL_PCT
    res = {
        "bench": "soak",
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "redis": args.redis,
        "steady_sockets": args.steady,
        "rate": args.rate,
        "churn_per_s": args.churn,
        "sent": soak.sent,
        "acked": soak.acked,
        "send_errors": soak.send_errors,
        "churn_started": soak.churn_started,
        "churn_done": soak.churn_done,
        "churn_failed": soak.churn_failed,
        "churn_fail_why": dict(soak.churn_fail_why.most_common(5)),
        "steady_reopened": soak.reopened,
        "rss_base_mib": round(base / 1024, 2),
        "rss_first_mib": round(rss[0] / 1024, 2),
        "rss_last_mib": round(rss[-1] / 1024, 2),
        "rss_min_mib": round(lo / 1024, 2),
        "rss_max_mib": round(hi / 1024, 2),
        "rss_drift_last_pct": round(drift_last, 2),
        "rss_band_pct": [round(band_lo, 2), round(band_hi, 2)],
        "rss_slope_mib_per_h": round(slope * 3600 / 1024, 2),
        "rss_curve": curve,
        "fds_quiet_start": qs.get("fds"),
        "fds_quiet_end": qe.get("fds"),
        "fd_kinds_start": qs.get("fd_kinds"),
        "fd_kinds_end": qe.get("fd_kinds"),
        "conns_quiet_start": qs.get("chatd_connections"),
        "conns_quiet_end": qe.get("chatd_connections"),
        "fds_steady_min": min(s["fds"] for s in steady),
        "fds_steady_max": max(s["fds"] for s in steady),
        "p99_ms_max": max((s["p99_ms"] for s in steady if s["p99_ms"] is not None), default=None),
        "p99_ms_median": round(statistics.median([s["p99_ms"] for s in steady if s["p99_ms"] is not None] or [0]), 2),
        "chatd_cpu_pct_mean": round(statistics.fmean(s["chatd_cpu_pct"] for s in steady), 1),
        "gen_cpu_pct_mean": round(statistics.fmean(s["gen_cpu_pct"] for s in steady), 1),
        "closes": samples[-1]["closes"],
        "rss_goal": f"every sample after warm-up within {RSS_GOAL_PCT:g}% of the first minute's median",
        "rss_pass": rss_ok,
        "fd_goal": "same fd count at the two quiet checkpoints (same population)",
        "fd_pass": fd_leak == 0 and same_pop,
        "samples_file": str(args.samples_out),
    }
    return res


def report(res: dict[str, Any]) -> str:
    lines = [
        f"steady phase {res['warmup_s']} to {res['duration_s']} s: {res['sent']:,} sent, {res['acked']:,} acked, "
        f"{res['send_errors']} send errors; churners {res['churn_done']:,} done of {res['churn_started']:,} "
        f"({res['churn_failed']} failed); steady sockets reopened {res['steady_reopened']}",
        f"RSS after warm-up: base {res['rss_base_mib']} MiB (first minute's median), first {res['rss_first_mib']}, "
        f"last {res['rss_last_mib']}, min {res['rss_min_mib']}, max {res['rss_max_mib']} MiB; "
        f"drift (last vs base) {res['rss_drift_last_pct']:+.2f}%, band {res['rss_band_pct'][0]:+.2f}% .. "
        f"{res['rss_band_pct'][1]:+.2f}%; slope {res['rss_slope_mib_per_h']:+.2f} MiB/h",
        f"fds at the quiet checkpoints: {res['fds_quiet_start']} -> {res['fds_quiet_end']} "
        f"(connections {res['conns_quiet_start']} -> {res['conns_quiet_end']}); during the steady phase "
        f"{res['fds_steady_min']} to {res['fds_steady_max']}",
        f"latency p99 per sample: median {res['p99_ms_median']} ms, max {res['p99_ms_max']} ms; "
        f"chatd CPU {res['chatd_cpu_pct_mean']}%, generator {res['gen_cpu_pct_mean']}%",
        f"RSS goal ({res['rss_goal']}): {'PASS' if res['rss_pass'] else 'FAIL'}",
        f"fd goal ({res['fd_goal']}): {'PASS' if res['fd_pass'] else 'FAIL'}",
    ]
    curve = benchlib.md_table(
        res["rss_curve"],
        [("from s", "from_s"), ("to s", "to_s"), ("chatd RSS MiB", "rss_mib"), ("fds (mean)", "fds_mean"),
         ("redis RSS MiB", "redis_rss_mib")],
    )  # fmt: skip
    return "\n".join(lines) + "\n\n" + curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=3600, help="seconds, warm-up included (3600)")
    ap.add_argument("--warmup", type=int, default=None, help="seconds (600; a third of a shorter run)")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples (5)")
    ap.add_argument("--steady", type=int, default=300, help="steady sockets (300)")
    ap.add_argument("--circles", type=int, default=10, help="circles of the steady population (10)")
    ap.add_argument("--senders", type=int, default=5, help="senders per circle (5)")
    ap.add_argument("--rate", type=float, default=200, help="messages/s of the steady population (200)")
    ap.add_argument("--size", type=int, default=120, help="message text bytes (120)")
    ap.add_argument("--churn", type=float, default=5, help="churner connections started per second (5)")
    ap.add_argument("--churn-life", type=float, default=10, help="seconds a churner stays, times 0.5 to 1.5 (10)")
    ap.add_argument("--churn-circles", type=int, default=5, help="circles the churners join and leave (5)")
    ap.add_argument(
        "--churn-ops",
        type=lambda v: set(filter(None, v.split(","))),
        default={"join", "history", "presence", "send"},
        help="what a churner does after auth: join (and leave), history, presence, send (all)",
    )
    ap.add_argument("--pool", type=int, default=1000, help="user ids the churners take in turn (1000)")
    ap.add_argument("--no-redis", dest="redis", action="store_false", help="no Redis bus (in-memory)")
    ap.add_argument("--samples-out", default=None, help="JSONL of the samples")
    ap.add_argument("--no-save", action="store_true", help="print only: no results/<date>.md, results.jsonl")
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = min(600, args.duration // 3)
    if args.samples_out is None:
        day = _dt.datetime.now(_dt.UTC).date().isoformat()
        args.samples_out = str(benchlib.RESULTS / f"{day}-soak-{args.duration}s.jsonl")
    res = benchlib.run_pinned(run(args), watchdog=args.duration + 600, fds=args.steady + 2000)
    text = report(res)
    print(text, flush=True)
    if not args.no_save:
        benchlib.save_result(res, f"soak {args.duration} s", text, chatd=True)


if __name__ == "__main__":
    main()
