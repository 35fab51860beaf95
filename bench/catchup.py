"""Catch-up cost of a user in 5,000 conversations, SQLite and PostgreSQL in one sitting
(issue 14: "catch-up cost for a user in 5,000 conversations stays proportional to what
changed").

One chatd on core 0 (and, for ``postgresql``, its PostgreSQL server, fsync on, on core 0
too), this generator on core 1. Set up through the protocol: ``star`` is a member of
``--convs`` conversations (``--dm-share`` of them DMs that ``--convs`` x share peers
opened with star, the rest circles made by ``--owners`` owners and joined by star);
``light``, the control, is a member of 10 of those circles only.

Then, per K in ``--changes`` (0, 10, 100, 1,000): take the current position, send one
message into K of star's conversations (the 10 of light's first, then circles and DMs
mixed), and time star's catch-up from that position: ``sync`` pages (``--limit``, 500 as
the reference client) until ``more`` is false, one after the other for ``--seconds``;
light's the same (it sees min(K, 10) of them). Per catch-up: p50/p99 ms, server CPU (and
PostgreSQL's), conversations and messages returned (checked: K, K). One more row sends
K = 10 into star's conversations plus ``--elsewhere`` messages (2 x ``--convs`` by
default) into circles star is not in: the store then has more new messages than star
has memberships, which is where chatd's ``sync`` switches from reading what changed to
probing each membership. A ``ping`` row gives the cost of any request; the auth rows time
a fresh socket's ``auth`` for star and light (it reads every membership: a socket
follows each of its user's conversations) and its CPU, connect and close included.

The claim holds if star's cost at K grows with K and is close to light's at the same
number changed (K = 0, K = 10), not 500 times it.

    .venv/bin/python bench/catchup.py                 # 5,000 conversations, SQLite + PostgreSQL ~4 min
    .venv/bin/python bench/catchup.py --quick         # 500 conversations, 1 s per row ~2 min
    .venv/bin/python bench/catchup.py --store sqlite  # one store
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import benchlib
import wsload
from fanout_targets import settle

LIGHT = 10  # the control user's memberships


class Setup:
    """One chatd with star's conversations and the sockets that change them."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.servers = benchlib.Servers()
        self.stats = wsload.Stats()
        self.tokens = benchlib.Tokens()
        self.conns: list[wsload.WSConn] = []
        self.star: wsload.WSConn | None = None
        self.light: wsload.WSConn | None = None
        self.order: list[tuple[wsload.WSConn, str]] = []  # star's conversations in change order, with a sender
        self.noise: list[tuple[wsload.WSConn, str]] = []  # circles star is not in, with their owner
        self.n_circles = self.n_dms = 0
        self.setup_s = 0.0
        self.sent = 0

    def pids(self) -> list[int]:
        return self.servers.pids() + ([p] if (p := self.servers.pg_pid()) else [])

    async def client(self, user: str) -> wsload.WSConn:
        conn = await benchlib.chatd_client(self.stats, self.servers.port, user, self.tokens.get(user))
        self.conns.append(conn)
        return conn

    def close(self) -> None:
        for c in self.conns:
            c.abort()
        self.servers.stop()
        self.servers.close()


async def gather_limited(calls: list[Callable[[], Awaitable[Any]]], limit: int = 200) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await asyncio.wait_for(call(), 120)

    return await asyncio.gather(*(one(c) for c in calls))


async def request(conn: wsload.WSConn, op: str, d: dict[str, Any]) -> dict[str, Any]:
    return benchlib.check_reply(await conn.request(op, d), op)


async def setup(args: argparse.Namespace, store: str) -> Setup:
    s = Setup(store)
    # no points pipeline (its worker would run behind the sends, in the windows); no quotas on
    # circles and DMs, no per-socket request limit for the setup's bursts
    extra = ["--no-points", "--circles-per-hour", "0", "--request-rate", "100000", "--request-burst", "100000"]
    await s.servers.start_chatd(1, extra + args.chatd_arg, prefix="bench-catchup-", store=store)
    t0 = time.monotonic()
    s.n_dms = round(args.convs * args.dm_share)
    s.n_circles = args.convs - s.n_dms
    print(f"  setup: star in {s.n_circles:,} circles + {s.n_dms:,} DMs, light in {LIGHT} of the circles ...", flush=True)
    stars = [await s.client("star") for _ in range(args.star_sockets)]  # star first: peers may open DMs to star
    s.star = stars[0]
    s.light = await s.client("light")
    owners = [await s.client(f"owner{i}") for i in range(args.owners)]

    def create(o: wsload.WSConn, name: str) -> Callable[[], Awaitable[dict[str, Any]]]:
        return lambda: request(o, "circle.create", {"name": name, "category": "interest"})

    made = await gather_limited([create(owners[i % args.owners], f"c{i}") for i in range(s.n_circles)])
    circles = [(owners[i % args.owners], r["conv"]) for i, r in enumerate(made)]
    noise = await gather_limited([create(o, f"elsewhere {i}") for i, o in enumerate(owners)])
    s.noise = [(o, r["conv"]) for o, r in zip(owners, noise, strict=True)]

    def join(conn: wsload.WSConn, conv: str) -> Callable[[], Awaitable[dict[str, Any]]]:
        return lambda: request(conn, "circle.join", {"conv": conv})

    await gather_limited([join(stars[i % len(stars)], conv) for i, (_, conv) in enumerate(circles)])
    await gather_limited([join(s.light, conv) for _, conv in circles[:LIGHT]])
    peers = await wsload.connect_many(
        s.n_dms, lambda i: benchlib.chatd_client(s.stats, s.servers.port, f"peer{i}", s.tokens.get(f"peer{i}"))
    )
    s.conns += peers

    def dm(p: wsload.WSConn) -> Callable[[], Awaitable[dict[str, Any]]]:
        return lambda: request(p, "dm.open", {"user": "star"})

    dms = [(p, r["conv"]) for p, r in zip(peers, await gather_limited([dm(p) for p in peers]), strict=True)]
    for c in stars[1:]:
        c.close()
    # change order: light's circles first, then the other circles and the DMs evenly mixed
    rest = [(i / max(len(circles) - LIGHT, 1), x) for i, x in enumerate(circles[LIGHT:])]
    rest += [(j / max(len(dms), 1), x) for j, x in enumerate(dms)]
    s.order = circles[:LIGHT] + [x for _, x in sorted(rest, key=lambda kx: kx[0])]
    await settle(s.stats)
    s.setup_s = time.monotonic() - t0
    rss = sum(benchlib.rss_kb(p) for p in s.pids()) / 1024
    print(f"  setup {s.setup_s:.1f} s ({len(s.conns):,} sockets), chatd + store RSS {rss:.0f} MiB", flush=True)
    return s


async def head(conn: wsload.WSConn) -> int:
    """The store's current position (a ``since`` past every position is answered with it)."""
    return int((await request(conn, "sync", {"since": 10**15}))["pos"])


async def change(s: Setup, k: int, elsewhere: int) -> None:
    """One message in each of the first ``k`` of star's conversations, and ``elsewhere`` in
    circles star is not in; every one acknowledged (committed) before it returns."""

    def send(conn: wsload.WSConn, conv: str) -> Callable[[], Awaitable[dict[str, Any]]]:
        s.sent += 1
        cid = f"k{s.sent}"
        return lambda: request(conn, "send", {"conv": conv, "cid": cid, "text": f"catch-up {cid}"})

    calls = [send(conn, conv) for conn, conv in s.order[:k]]
    calls += [send(*s.noise[i % len(s.noise)]) for i in range(elsewhere)]
    await gather_limited(calls)
    await settle(s.stats, quiet=0.5)  # the pushes to star's and light's sockets


async def catch_up(conn: wsload.WSConn, since: int, limit: int) -> tuple[int, int, int]:
    """``sync`` from ``since`` until ``more`` is false: (messages, conversations, pages)."""
    pos, msgs, pages = since, 0, 0
    convs: set[str] = set()
    while True:
        d = await request(conn, "sync", {"since": pos, "limit": limit})
        pages += 1
        msgs += len(d["messages"])
        convs.update(c["conv"] for c in d["convs"])
        pos = d["pos"]
        if not d["more"]:
            return msgs, len(convs), pages


async def measure(s: Setup, seconds: float, call: Callable[[], Awaitable[Any]], min_calls: int = 5) -> dict[str, Any]:
    """``call`` one after the other for ``seconds``: latency and CPU per call (chatd's and
    PostgreSQL's, its backends included)."""
    await benchlib.wait_quiet(30, server_pid=s.pids())
    pg = s.servers.pg_pid()
    lat: list[int] = []
    pg0 = sum(benchlib.cpu_times([pg])) if pg else 0.0
    w = benchlib.Window(s.pids()).start()  # chatd and PostgreSQL: neither counts as the others' load
    end = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < end or len(lat) < min_calls:
        t0 = time.perf_counter_ns()
        last = await call()
        lat.append(time.perf_counter_ns() - t0)
    await asyncio.sleep(0.2)  # what the calls left behind (a closed socket's cleanup)
    w.stop()
    pg_cpu = sum(benchlib.cpu_times([pg])) - pg0 if pg else 0.0
    chatd = w.server - pg_cpu
    n = len(lat)
    return {
        "calls": n,
        **{k: v for k, v in wsload.lat_summary_ms(lat).items() if k != "n"},
        "server_us": round(1e6 * chatd / n, 1),
        "db_us": round(1e6 * pg_cpu / n, 1) if pg else None,
        "total_us": round(1e6 * w.server / n, 1),
        "server_cpu_pct": w.pct(chatd),
        "gen_cpu_pct": w.pct(w.gen),
        "other_pct": w.other_pct,
        "last": last,
    }


async def sync_row(s: Setup, args: argparse.Namespace, who: str, k: int, elsewhere: int, since: int) -> dict[str, Any]:
    conn = s.star if who == "star" else s.light
    assert conn is not None
    r = await measure(s, args.seconds, lambda: catch_up(conn, since, args.limit))
    msgs, convs, pages = r.pop("last")
    expect = k if who == "star" else min(k, LIGHT)
    row = {
        "store": s.store,
        "what": "sync",
        "user": who,
        "memberships": args.convs if who == "star" else LIGHT,
        "changed": k,
        "user_changed": expect,
        "elsewhere": elsewhere,
        "convs_returned": convs,
        "msgs_returned": msgs,
        "pages": pages,
        **r,
        "check": "ok" if (convs, msgs) == (expect, expect) else f"expected {expect} convs and messages",
    }
    print(
        f"  {s.store:10} sync {who:5} K={k:<5,}" + (f" +{elsewhere:,} elsewhere" if elsewhere else "")
        + f": {convs} convs, {msgs} msgs, {pages} page(s)  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
        f"chatd {row['server_us']} µs" + (f" + PostgreSQL {row['db_us']} µs" if row["db_us"] is not None else "")
        + f" per catch-up ({row['calls']} calls)  others {row['other_pct']}%"
        + ("" if row["check"] == "ok" else f"  !! {row['check']}"),
        flush=True,
    )
    return row


async def auth_row(s: Setup, args: argparse.Namespace, who: str) -> dict[str, Any]:
    token = s.tokens.get(who)
    auth_lat: list[int] = []

    async def connect_auth() -> None:
        conn = await wsload.connect(s.stats, benchlib.HOST, s.servers.port, "/", ("chatd.v1.json",))
        t0 = time.perf_counter_ns()
        rep = await asyncio.wait_for(conn.request("auth", {"token": token}), 20)
        auth_lat.append(time.perf_counter_ns() - t0)
        benchlib.check_reply(rep, "auth")
        conn.close()

    r = await measure(s, args.seconds, connect_auth)
    r.pop("last")
    a = wsload.lat_summary_ms(auth_lat)
    row = {
        "store": s.store,
        "what": "auth",
        "user": who,
        "memberships": args.convs if who == "star" else LIGHT,
        **r,
        "auth_p50_ms": a["p50_ms"],
        "auth_p99_ms": a["p99_ms"],
    }
    print(
        f"  {s.store:10} auth {who:5} ({row['memberships']:,} conversations): auth p50 {row['auth_p50_ms']} ms  "
        f"p99 {row['auth_p99_ms']} ms (connect + auth p50 {row['p50_ms']} ms)  chatd {row['server_us']} µs"
        + (f" + PostgreSQL {row['db_us']} µs" if row["db_us"] is not None else "")
        + f" per connect + auth + close ({row['calls']} sockets)",
        flush=True,
    )
    return row


async def run_store(args: argparse.Namespace, store: str) -> list[dict[str, Any]]:
    print(f"{store}: a user in {args.convs:,} conversations", flush=True)
    s = await setup(args, store)
    try:
        star = s.star
        assert star is not None
        rows: list[dict[str, Any]] = []
        p = await measure(s, args.seconds, lambda: request(star, "ping", {}))
        p.pop("last")
        rows.append({"store": store, "what": "ping", "user": "star", **p})
        print(f"  {store:10} ping: p50 {p['p50_ms']} ms  chatd {p['server_us']} µs per request", flush=True)
        phases = [(k, 0) for k in args.changes] + ([(LIGHT, args.elsewhere)] if args.elsewhere else [])
        for k, elsewhere in phases:
            since = await head(star)
            await change(s, k, elsewhere)
            for who in ("star", "light"):
                rows.append(await sync_row(s, args, who, k, elsewhere, since))
        for who in ("star", "light"):
            rows.append(await auth_row(s, args, who))
        dead = s.servers.exited()
        if dead is not None:
            print(f"  !! pid {dead.pid} exited ({dead.returncode}):\n{benchlib.log_tail(dead)}")
        benchlib.print_log_warnings(s.servers.procs)
        for r in rows:
            r["setup_s"] = round(s.setup_s, 1)
        return rows
    finally:
        s.close()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for store in args.stores:
        rows += await run_store(args, store)
    return rows


def find(rows: list[dict[str, Any]], **kv: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in kv.items())), None)


def verdicts(args: argparse.Namespace, rows: list[dict[str, Any]]) -> list[str]:
    """Per store: star against light at the same number changed, star's growth with K,
    the rows with messages elsewhere, auth; then PostgreSQL against SQLite."""
    out = []
    for store in args.stores:
        for k in [k for k in args.changes if k <= LIGHT]:
            st, li = find(rows, store=store, what="sync", user="star", changed=k, elsewhere=0), find(
                rows, store=store, what="sync", user="light", changed=k, elsewhere=0
            )
            if st and li:
                out.append(
                    f"- {store}, {k} changed: star ({args.convs:,} conversations) / light ({LIGHT}) per catch-up: "
                    f"CPU {st['total_us'] / max(li['total_us'], 1e-9):.2f} ({st['total_us']} vs {li['total_us']} µs), "
                    f"p50 {st['p50_ms']} vs {li['p50_ms']} ms"
                )
        ks = [find(rows, store=store, what="sync", user="star", changed=k, elsewhere=0) for k in args.changes]
        ks = [r for r in ks if r]
        if len(ks) > 1:
            lo, hi = ks[0], ks[-1]
            slope = (hi["total_us"] - lo["total_us"]) / max(hi["changed"] - lo["changed"], 1)
            out.append(
                f"- {store}, star's catch-up from K={lo['changed']:,} to K={hi['changed']:,}: "
                f"{lo['total_us']} -> {hi['total_us']} µs, {slope:.1f} µs more per changed conversation; p50 "
                f"{lo['p50_ms']} -> {hi['p50_ms']} ms ("
                + ", ".join(f"K={r['changed']:,}: {r['total_us']} µs" for r in ks)
                + ")"
            )
        noisy = find(rows, store=store, what="sync", user="star", elsewhere=args.elsewhere) if args.elsewhere else None
        if noisy:
            quiet = find(rows, store=store, what="sync", user="star", changed=noisy["changed"], elsewhere=0)
            out.append(
                f"- {store}, star with {noisy['changed']} changed and {args.elsewhere:,} new messages elsewhere "
                f"(more than star's {args.convs:,} memberships): {noisy['total_us']} µs per catch-up, p50 "
                f"{noisy['p50_ms']} ms"
                + (f"; {noisy['total_us'] / max(quiet['total_us'], 1e-9):.2f}x the same without them" if quiet else "")
            )
        sa, la = find(rows, store=store, what="auth", user="star"), find(rows, store=store, what="auth", user="light")
        if sa and la:
            per = (sa["total_us"] - la["total_us"]) / max(args.convs - LIGHT, 1)
            out.append(
                f"- {store}, auth: star p50 {sa['auth_p50_ms']} ms vs light {la['auth_p50_ms']} ms; CPU per connect + "
                f"auth + close {sa['total_us']} vs {la['total_us']} µs: {per:.2f} µs per membership"
            )
    if "sqlite" in args.stores and "postgresql" in args.stores:
        for k in args.changes:
            a = find(rows, store="sqlite", what="sync", user="star", changed=k, elsewhere=0)
            b = find(rows, store="postgresql", what="sync", user="star", changed=k, elsewhere=0)
            if a and b:
                out.append(
                    f"- star, K={k:,}: PostgreSQL / SQLite CPU per catch-up (chatd + store) "
                    f"{b['total_us'] / max(a['total_us'], 1e-9):.2f}, p50 {b['p50_ms']} vs {a['p50_ms']} ms"
                )
    return out


SYNC_COLS = [
    ("store", "store"),
    ("user", "user"),
    ("memberships", "memberships"),
    ("K changed", "changed"),
    ("elsewhere", "elsewhere"),
    ("convs returned", "convs_returned"),
    ("msgs returned", "msgs_returned"),
    ("pages", "pages"),
    ("catch-ups", "calls"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("chatd µs/catch-up", "server_us"),
    ("PostgreSQL µs", "db_us"),
    ("total µs", "total_us"),
    ("chatd core %", "server_cpu_pct"),
    ("generator CPU %", "gen_cpu_pct"),
    ("others %", "other_pct"),
    ("check", "check"),
]
AUTH_COLS = [
    ("store", "store"),
    ("what", "what"),
    ("user", "user"),
    ("memberships", "memberships"),
    ("calls", "calls"),
    ("auth p50 ms", "auth_p50_ms"),
    ("auth p99 ms", "auth_p99_ms"),
    ("connect+auth p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("chatd µs/call", "server_us"),
    ("PostgreSQL µs", "db_us"),
    ("total µs", "total_us"),
    ("others %", "other_pct"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 conversations, K up to 100, 1 s per row")
    ap.add_argument("--store", default="sqlite,postgresql", help="comma list of sqlite, postgresql (both)")
    ap.add_argument("--convs", type=int, help="star's conversations (5,000)")
    ap.add_argument("--dm-share", type=float, default=0.2, help="of them DMs (0.2), the rest circles")
    ap.add_argument("--changes", help="K: conversations changed before a catch-up, comma list (0,10,100,1000)")
    ap.add_argument("--elsewhere", type=int, help="messages elsewhere in the last row (2 x --convs; 0: no such row)")
    ap.add_argument("--limit", type=int, default=500, help="sync page size (500, the reference client's)")
    ap.add_argument("--seconds", type=float, help="per row: catch-ups one after the other for this long (3)")
    ap.add_argument("--owners", type=int, default=20, help="circle owners' sockets (20)")
    ap.add_argument("--star-sockets", type=int, default=16, help="star's sockets joining the circles (16)")
    ap.add_argument("--chatd-arg", action="append", default=[], help="extra argument for chatd serve")
    args = ap.parse_args()
    q = args.quick
    args.convs = args.convs or (500 if q else 5_000)
    if args.convs < LIGHT:
        raise SystemExit(f"--convs must be at least {LIGHT}")
    args.seconds = args.seconds or (1.0 if q else 3.0)
    changes = args.changes or ("0,10,100" if q else "0,10,100,1000")
    args.changes = sorted({int(x) for x in changes.split(",") if int(x) <= args.convs})
    args.elsewhere = 2 * args.convs if args.elsewhere is None else args.elsewhere
    args.stores = [x.strip() for x in args.store.split(",") if x.strip()]
    if not args.stores or not set(args.stores) <= {"sqlite", "postgresql"}:
        raise SystemExit("--store takes sqlite and/or postgresql")
    if not benchlib.chatd_available():
        raise SystemExit("chatd is not installed")
    dms = round(args.convs * args.dm_share)
    rows = benchlib.run_pinned(run(args), watchdog=300 if q else 900, fds=dms + args.owners + args.star_sockets + 200)
    sync_rows = [r for r in rows if r["what"] == "sync"]
    other_rows = [r for r in rows if r["what"] != "sync"]
    lines = verdicts(args, rows)
    setup = (
        f"star in {args.convs:,} conversations ({args.convs - dms:,} circles, {dms:,} DMs), light in {LIGHT}; "
        f"one message in each of K of star's conversations (light's {LIGHT} first) since the position a catch-up "
        f"starts from; sync pages of {args.limit} until more is false, {args.seconds} s of catch-ups per row; "
        f"chatd --no-points (and PostgreSQL, fsync on) on core 0, generator on core 1"
    )
    text = (
        f"{setup}\n\n{benchlib.md_table(sync_rows, SYNC_COLS)}\n\n{benchlib.md_table(other_rows, AUTH_COLS)}\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print("\n" + text)
    benchlib.save_result(
        {"bench": "catchup", "setup": setup, "rows": rows, "verdicts": lines},
        "catch-up of a user in many conversations (bench/catchup.py)",
        text,
        chatd=True,
    )


if __name__ == "__main__":
    main()
