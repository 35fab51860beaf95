"""Presence latency: how soon do watchers hear that a user came online / went offline?

chatd with 1 process and, in the same run, ``chatd2``: 2 ``chatd serve`` processes
on one SQLite file and one redis-server, watchers on the first process, targets on
the second (so every change goes through Redis: the device write, then the
``p:<user>`` envelope). All servers on core 0, this generator on core 1.

W watcher sockets (users ``w<i>``) each ``presence.sub`` to a slice of the T target
users (``t<j>``), so every target has the same number of watchers. Then, open
loop at ``--rate`` changes/s, round-robin over the targets: a target that is
offline connects and authenticates (an *online* change, timed from the moment its
``auth`` reply is read); one that is online is closed (an *offline* change, timed
from the client's close call). Each watcher's ``presence`` push for that user and
status is matched to the change: latency = push received - reference time, every
push of every change begun in the measured window. At 150 changes/s and 200
targets, a target toggles every ~1.3 s.

    .venv/bin/python bench/presence.py            # ~1.5 min
    .venv/bin/python bench/presence.py --quick    # ~30 s
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import benchlib
import wsload

NODES = {"chatd": 1, "chatd2": 2}


class Change:
    __slots__ = ("expected", "kind", "pushes", "t_ref", "user", "window")

    def __init__(self, user: str, kind: str, expected: int, window: bool) -> None:
        self.user = user
        self.kind = kind  # "online" | "offline"
        self.expected = expected
        self.window = window  # begun inside the measured window
        self.t_ref: int | None = None  # ns: auth reply read (online) / close called (offline)
        self.pushes: dict[int, int] = {}  # watcher index -> push receive time (ns)


class Run(benchlib.Servers):
    """One server setup (1 or 2 processes) with its watchers and targets."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        super().__init__()
        self.name = name
        self.args = args
        self.stats = wsload.Stats()
        self.tokens = benchlib.Tokens()
        self.watchers: list[wsload.WSConn] = []
        self.target_users = [f"t{j}" for j in range(args.targets)]
        self.watched_by: dict[str, list[int]] = {u: [] for u in self.target_users}
        self.target_conns: dict[str, wsload.WSConn | None] = dict.fromkeys(self.target_users)
        self.busy: set[str] = set()
        self.current: dict[tuple[str, str], Change] = {}  # (user, kind) -> latest change begun
        self.changes: list[Change] = []
        self.recording = False
        self.auth_ms: list[int] = []  # target connect -> auth reply, ns (window only)
        self.unmatched = 0
        self.dup_pushes = 0
        self.failed = Counter[str]()
        self.skipped = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- processes ------------------------------------------------------------

    @property
    def watcher_port(self) -> int:
        return self.ports[0]

    @property
    def target_port(self) -> int:
        return self.ports[-1]

    async def start(self) -> None:
        await self.start_chatd(NODES[self.name], self.args.chatd_arg, prefix="bench-presence-")

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for c in self.watchers:
            c.abort()
        for c in self.target_conns.values():
            if c is not None:
                c.abort()
        super().close()

    # -- watchers ----------------------------------------------------------------

    def on_watcher_frame(self, conn: wsload.WSConn, payload: bytes, t: int) -> None:
        obj = conn.loads(payload)
        if isinstance(obj, dict) and obj.get("push") == "presence":
            d = obj["d"]
            ch = self.current.get((d["user"], d["status"]))
            if ch is None:
                self.unmatched += 1
            elif conn.ctx in ch.pushes:
                self.dup_pushes += 1
            else:
                ch.pushes[conn.ctx] = t
            return
        wsload.WSConn.dispatch_reply(conn, payload, t)

    async def setup_watchers(self) -> None:
        a = self.args
        users = [f"w{i}" for i in range(a.watchers)]

        async def one(i: int) -> wsload.WSConn:
            conn = await benchlib.chatd_client(
                self.stats, self.watcher_port, users[i], self.tokens.get(users[i]), a.proto, self.on_watcher_frame
            )
            conn.ctx = i
            return conn

        self.watchers = await wsload.connect_many(len(users), one)
        T = a.targets
        for i, conn in enumerate(self.watchers):
            subs = [self.target_users[(i * a.per_watcher + j) % T] for j in range(a.per_watcher)]
            for u in dict.fromkeys(subs):
                self.watched_by[u].append(i)
            for k in range(0, len(subs), 100):
                rep = await asyncio.wait_for(conn.request("presence.sub", {"users": subs[k : k + 100]}), 30)
                benchlib.check_reply(rep, "presence.sub")

    # -- targets -----------------------------------------------------------------

    def begin(self, user: str) -> None:
        """One change of ``user``: connect+auth if offline, close if online."""
        if user in self.busy:
            self.skipped += 1
            return
        conn = self.target_conns[user]
        kind = "online" if conn is None else "offline"
        ch = Change(user, kind, len(self.watched_by[user]), self.recording)
        self.changes.append(ch)
        self.current[(user, kind)] = ch
        if conn is not None:
            self.target_conns[user] = None
            ch.t_ref = wsload.now_ns()
            conn.close()
            return
        self.busy.add(user)
        task = asyncio.get_running_loop().create_task(self._connect(user, ch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @staticmethod
    def on_target_frame(conn: wsload.WSConn, payload: bytes, t: int) -> None:
        conn.ctx = t  # receive time of the last reply (the auth reply)
        wsload.WSConn.dispatch_reply(conn, payload, t)

    async def _connect(self, user: str, ch: Change) -> None:
        t0 = wsload.now_ns()
        try:
            conn = await benchlib.chatd_client(
                self.stats, self.target_port, user, self.tokens.get(user), self.args.proto, self.on_target_frame
            )
            ch.t_ref = conn.ctx
            self.target_conns[user] = conn
            if ch.window:
                self.auth_ms.append(conn.ctx - t0)
        except Exception as exc:  # counted and reported: a failed connect is no change
            self.failed[type(exc).__name__] += 1
            ch.expected = 0
        finally:
            self.busy.discard(user)

    async def drive(self, rate: float, stop: asyncio.Event) -> None:
        t0 = time.monotonic()
        done = k = 0
        n = len(self.target_users)
        while not stop.is_set():
            await asyncio.sleep(0.005)
            due = int((time.monotonic() - t0) * rate) - done
            for _ in range(due):
                self.begin(self.target_users[k % n])
                k += 1
            done += due


def summary(lat_ns: list[int]) -> dict[str, Any]:
    s = sorted(lat_ns)
    out = wsload.lat_summary_ms([max(v, 0) for v in s])
    out["min_ms"] = round(s[0] / 1e6, 3) if s else None
    out["before_ref"] = sum(1 for v in s if v < 0) or None
    return out


async def measure(r: Run) -> list[dict[str, Any]]:
    a = r.args
    print(f"{r.name}: {a.watchers} watchers x {a.per_watcher} subscriptions, {a.targets} targets", flush=True)
    await r.start()
    t0 = time.monotonic()
    await r.setup_watchers()
    setup_s = time.monotonic() - t0
    per_target = Counter(len(v) for v in r.watched_by.values())
    print(f"  setup {setup_s:.1f} s; watchers per target: {dict(per_target)}", flush=True)
    await benchlib.wait_quiet(30, server_pid=r.all_pids())
    stop = asyncio.Event()
    task = asyncio.create_task(r.drive(a.rate, stop))
    await asyncio.sleep(a.warmup)
    pids = r.pids()
    r.recording = True
    w = benchlib.Window(pids, r.redis.pid if r.redis is not None else None).start()
    await asyncio.sleep(a.window)
    r.recording = False
    w.stop()
    stop.set()
    await task
    # drain: let the last changes' pushes arrive
    for _ in range(100):  # at most 10 s
        if not r.busy and all(len(c.pushes) >= c.expected for c in r.changes[-50:]):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    el = w.elapsed
    win = [c for c in r.changes if c.window]
    rows = []
    for kind in ("online", "offline"):
        cs = [c for c in win if c.kind == kind]
        lat = [t - c.t_ref for c in cs if c.t_ref is not None for t in c.pushes.values()]
        expected = sum(c.expected for c in cs)
        received = sum(len(c.pushes) for c in cs)
        rows.append(
            {
                "server": r.name,
                "processes": len(r.procs),
                "kind": kind,
                "changes": len(cs),
                "changes_per_s": round(len(cs) / el, 1),
                "pushes_expected": expected,
                "pushes_received": received,
                "received_pct": round(100 * received / max(expected, 1), 2),
                **summary(lat),
                "auth_p50_ms": wsload.lat_summary_ms(r.auth_ms)["p50_ms"] if kind == "online" else None,
                "auth_p99_ms": wsload.lat_summary_ms(r.auth_ms)["p99_ms"] if kind == "online" else None,
                "server_us_per_change": round(1e6 * w.server / max(len(win), 1), 1),
                "redis_us_per_change": round(1e6 * w.redis_cpu / max(len(win), 1), 1) if r.redis else None,
                "server_cpu_pct": w.pct(w.server),
                "redis_cpu_pct": w.pct(w.redis_cpu) if r.redis else None,
                "gen_cpu_pct": w.pct(w.gen),
                "other_pct": w.other_pct,
                "unmatched": r.unmatched or None,
                "dup_pushes": r.dup_pushes or None,
                "skipped": r.skipped or None,
                "failed": dict(r.failed) or None,
                "closes": dict(r.stats.closes) or None,
                "errors": dict(r.stats.errors) or None,
            }
        )
        row = rows[-1]
        print(
            f"  {r.name:6} {kind:7}: {row['changes']} changes ({row['changes_per_s']}/s), pushes "
            f"{row['pushes_received']}/{row['pushes_expected']} ({row['received_pct']}%)  p50 {row['p50_ms']} ms  "
            f"p99 {row['p99_ms']} ms  max {row['max_ms']} ms  min {row['min_ms']} ms"
            + (f"  (target auth p50 {row['auth_p50_ms']} / p99 {row['auth_p99_ms']} ms)" if kind == "online" else "")
            + (f"  pushes before the reference time: {row['before_ref']}" if row["before_ref"] else ""),
            flush=True,
        )
    row = rows[0]
    print(
        f"  {r.name:6} server {row['server_us_per_change']} µs/change ({row['server_cpu_pct']}% core)"
        + (f"  redis {row['redis_us_per_change']} µs/change ({row['redis_cpu_pct']}%)" if r.redis else "")
        + f"  generator {row['gen_cpu_pct']}%  others {w.other_pct}%"
        + (f"  unmatched pushes {r.unmatched}" if r.unmatched else "")
        + (f"  duplicate pushes {r.dup_pushes}" if r.dup_pushes else "")
        + (f"  skipped (target busy) {r.skipped}" if r.skipped else "")
        + (f"  failed connects {dict(r.failed)}" if r.failed else "")
        + (f"  closes {dict(r.stats.closes)}" if r.stats.closes else "")
        + (f"  errors {dict(r.stats.errors)}" if r.stats.errors else ""),
        flush=True,
    )
    benchlib.print_log_warnings(r.procs)
    return rows


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in args.setups:
        r = Run(name, args)
        try:
            rows += await measure(r)
        finally:
            r.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50 targets, 20 watchers x 25, 50 changes/s, 5 s window")
    ap.add_argument(
        "--setup", choices=["both", "chatd", "chatd2"], default="both", help="both = chatd, then chatd2 (default)"
    )
    ap.add_argument("--targets", type=int, help="target users whose presence changes (200)")
    ap.add_argument("--watchers", type=int, help="watcher sockets (100)")
    ap.add_argument("--per-watcher", type=int, help="targets each watcher subscribes to (40; ≤ 256)")
    ap.add_argument("--rate", type=float, help="presence changes/s, half online, half offline (150)")
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--window", type=float)
    ap.add_argument("--proto", choices=["json", "msgpack"], default="json", help="chatd subprotocol")
    ap.add_argument("--chatd-arg", action="append", default=[], help="extra argument for chatd serve")
    args = ap.parse_args()
    q = args.quick
    args.targets = args.targets or (50 if q else 200)
    args.watchers = args.watchers or (20 if q else 100)
    args.per_watcher = min(args.per_watcher or (25 if q else 40), args.targets)
    args.rate = args.rate or (50.0 if q else 150.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if q else 3.0)
    args.window = args.window or (5.0 if q else 20.0)
    args.setups = ["chatd", "chatd2"] if args.setup == "both" else [args.setup]
    if not benchlib.chatd_available():
        raise SystemExit("chatd is not installed")
    if "--presence-lease" not in benchlib.chatd_help():
        raise SystemExit("this chatd has no presence")
    if "chatd2" in args.setups and "--redis-url" not in benchlib.chatd_help():
        print("this chatd has no --redis-url: no chatd2")
        args.setups.remove("chatd2")

    watchdog = int(60 + len(args.setups) * (40 + args.warmup + args.window) * 1.5)
    rows = benchlib.run_pinned(run(args), watchdog)
    table = benchlib.md_table(
        rows,
        [
            ("server", "server"),
            ("change", "kind"),
            ("changes", "changes"),
            ("changes/s", "changes_per_s"),
            ("pushes expected", "pushes_expected"),
            ("pushes received", "pushes_received"),
            ("received %", "received_pct"),
            ("p50 ms", "p50_ms"),
            ("p99 ms", "p99_ms"),
            ("max ms", "max_ms"),
            ("min ms", "min_ms"),
            ("pushes before ref", "before_ref"),
            ("target auth p50 ms", "auth_p50_ms"),
            ("target auth p99 ms", "auth_p99_ms"),
        ],
    )
    cpu = benchlib.md_table(
        [r for r in rows if r["kind"] == "online"],
        [
            ("server", "server"),
            ("processes", "processes"),
            ("server µs/change", "server_us_per_change"),
            ("redis µs/change", "redis_us_per_change"),
            ("server core %", "server_cpu_pct"),
            ("redis core %", "redis_cpu_pct"),
            ("generator CPU %", "gen_cpu_pct"),
            ("others %", "other_pct"),
            ("unmatched pushes", "unmatched"),
            ("skipped", "skipped"),
            ("failed connects", "failed"),
            ("closes", "closes"),
            ("errors", "errors"),
        ],
    )
    goals = [
        f"- {r['server']} {r['kind']}: p99 {r['p99_ms']} ms (goal ≤ 50 ms: "
        f"{'met' if r['p99_ms'] == r['p99_ms'] and r['p99_ms'] <= 50 else 'not met'}); "
        f"{r['pushes_received']:,} of {r['pushes_expected']:,} pushes"
        for r in rows
    ]
    setup = (
        f"{args.watchers} watchers x {args.per_watcher} presence subscriptions over {args.targets} targets, "
        f"{args.rate:g} changes/s (half online, half offline), warm-up {args.warmup} s, window {args.window} s; "
        "chatd2 = 2 chatd processes + redis-server, watchers on the first, targets on the second; "
        "servers on core 0, generator on core 1"
        + (f"; chatd args: {' '.join(args.chatd_arg)}" if args.chatd_arg else "")
    )
    text = f"{setup}\n\n{table}\n\n{cpu}\n\n" + "\n".join(goals) + "\n"
    print("\n" + text)
    benchlib.save_result(
        {"bench": "presence", "setup": setup, "rows": rows, "goals": goals},
        "presence latency (bench/presence.py)",
        text,
        chatd=True,
    )


if __name__ == "__main__":
    main()
