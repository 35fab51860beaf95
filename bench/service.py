"""Service groups at the community's scale (issue 11): provisioning, the staff inbox,
a reconnect's catch-up, and customer messages with clocks against circle messages.

One chatd on core 0 (``--sync full``, points on), this generator on core 1:

1. **provision**: ``--groups`` service groups of 15 members (the owner, a Fellow, 10
   staff, 3 bots) through the admin API's HTTP listener, ``--concurrency`` requests in
   flight: groups/s and the database's size. One staff member, ``star``, sits in the
   first ``--star-groups`` groups.
2. **inbox**: ``--waiting`` of star's groups get a customer message; then star's first
   inbox page (``all`` and ``waiting``), ``--calls`` times each: p50/p99 (goal p99 ≤ 20 ms).
3. **reconnect**: star's socket goes; 3 of their groups change; a new socket's ``sync``
   from the old position: how many conversations and messages come back (goal: 3, not
   ``--star-groups``) and how long it takes, against a sync where nothing changed.
4. **campaign**: a care campaign into every group while the owners chat at ``--rate``:
   how long the posts take (goal ≤ 30 s for 100,000 groups) and the chat's ack p99
   meanwhile (goal ≤ 50 ms).
5. **messages**: ``--online`` owners online (and star) send to their service groups at
   ``--rate`` messages/s, then the same owners to a circle each (star a member of as
   many circles as groups): ack p50/p99 (goal ≤ 20 ms) and server CPU per message; the
   ratio service : circle (goal ≤ 1.3).

    .venv/bin/python bench/service.py           # 100,000 groups, ~15 min
    .venv/bin/python bench/service.py --quick   # 5,000 groups, ~1.5 min
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import benchlib
import wsload

BOTS = ["bot.charging", "bot.repairs", "bot.policy"]
STAFF_POOL = 2000
FELLOWS = 500


def mint() -> Any:
    src = benchlib.chatd_source()
    if src is not None and str(src) not in sys.path:
        sys.path.insert(0, str(src))
    from chatd.auth import make_token

    return make_token


def group(i: int, star_groups: int) -> dict[str, Any]:
    staff = [f"staff{(i * 10 + k) % STAFF_POOL}" for k in range(10)]
    if i < star_groups:
        staff[0] = "star"
    return {
        "owner": f"owner{i}", "fellow": f"fellow{i % FELLOWS}",
        "staff": [{"user": u, "badges": ["Engineer"]} for u in staff], "bots": BOTS,
        "tags": {"city": ("Shanghai", "Beijing", "Hefei", "Shenzhen")[i % 4], "model": ("ES8", "ET7", "ES6")[i % 3]},
    }


async def provision(admin_port: int, token: str, n: int, star_groups: int, concurrency: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{admin_port}/v1/service.provision"
    headers = {"Authorization": f"Bearer {token}"}
    todo = iter(range(n))
    lat: list[int] = []
    errors: Counter[str] = Counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in todo:
            t0 = time.perf_counter_ns()
            async with session.post(url, json=group(i, star_groups), headers=headers) as r:
                body = await r.json()
                if r.status != 200:
                    errors[body["error"]["code"]] += 1
            lat.append(time.perf_counter_ns() - t0)

    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    el = time.monotonic() - t0
    return {"groups": n, "seconds": round(el, 1), "groups_per_s": round(n / el), **wsload.lat_summary_ms(lat),
            "errors": dict(errors) or None}


def db_size(db: str) -> int:
    return sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))


async def timed_calls(conn: Any, op: str, d: dict[str, Any], n: int) -> tuple[list[int], dict[str, Any]]:
    lat: list[int] = []
    rep: dict[str, Any] = {}
    for _ in range(n):
        t0 = time.perf_counter_ns()
        rep = benchlib.check_reply(await conn.request(op, d), op)
        lat.append(time.perf_counter_ns() - t0)
    return lat, rep


class Load:
    """Sends at a fixed rate from many sockets, round robin; ack latency per message."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.ids = itertools.count(1).__next__
        self.lat: list[int] = []
        self.recording = False
        self.acks = 0
        self.errors: Counter[str] = Counter()
        self.running = False

    def on_other(self, conn: Any, payload: bytes, t: int) -> None:
        obj = conn.loads(payload)
        rid = obj.get("id") if isinstance(obj, dict) else None
        if rid is None:
            return
        if rid in conn.pending:
            wsload.WSConn.dispatch_reply(conn, payload, t)
            return
        t0 = conn.ctx.pop(rid, None)
        if t0 is None:
            return
        if "error" in obj:
            self.errors[str(obj["error"].get("code"))] += 1
            return
        self.acks += 1
        if self.recording:
            self.lat.append(t - t0)

    async def run(self, conns: list[Any], convs: dict[Any, str], seconds: float) -> None:
        tick = 0.005
        per_tick = self.rate * tick
        owed = 0.0
        order = itertools.cycle(conns)
        self.running = True
        end = time.monotonic() + seconds
        nxt = time.monotonic()
        while time.monotonic() < end and self.running:
            owed += per_tick
            while owed >= 1:
                owed -= 1
                c = next(order)
                i = self.ids()
                c.ctx[i] = wsload.now_ns()
                c.send_obj({"id": i, "op": "send", "d": {"conv": convs[c], "cid": f"l{i}", "text": wsload.make_text(120)}})
            nxt += tick
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        self.running = False


async def phase_messages(args: argparse.Namespace, port: int, pid: int, load: Load, conns: list[Any],
                         convs: dict[Any, str], label: str) -> dict[str, Any]:
    await benchlib.wait_quiet(30, server_pid=pid)
    load.lat.clear()
    warm = asyncio.create_task(load.run(conns, convs, args.warmup + args.window))
    await asyncio.sleep(args.warmup)
    a0 = load.acks
    load.recording = True
    w = benchlib.Window([pid]).start()
    await asyncio.sleep(args.window)
    w.stop()
    load.recording = False
    await warm
    for _ in range(50):
        if not any(c.ctx for c in conns):
            break
        await asyncio.sleep(0.1)
    acks = max(load.acks - a0, 1)
    row = {"phase": label, "online": len(conns), "rate": args.rate, "acks_per_s": round(acks / w.elapsed),
           **wsload.lat_summary_ms(load.lat), "server_us_per_msg": round(1e6 * w.server / acks, 1),
           "server_cpu_pct": w.pct(w.server), "gen_cpu_pct": w.pct(w.gen), "other_pct": w.other_pct,
           "errors": dict(load.errors) or None}
    print(f"  {label}: {row['acks_per_s']:,} acks/s  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
          f"server {row['server_us_per_msg']} µs/msg ({row['server_cpu_pct']}% core)  "
          f"generator {row['gen_cpu_pct']}%" + (f"  errors {row['errors']}" if row["errors"] else ""), flush=True)
    load.errors.clear()
    return row


async def phase_campaign(args: argparse.Namespace, admin_port: int, token: str, pid: int, load: Load,
                         conns: list[Any], convs: dict[Any, str]) -> dict[str, Any]:
    """A campaign into every group while the owners chat at ``--rate``."""
    await benchlib.wait_quiet(30, server_pid=pid)
    url = f"http://127.0.0.1:{admin_port}/v1/service.campaign"
    body = {"cid": "bench", "card": {"type": "gift", "title": "新年礼包 New Year gift",
                                     "actions": [{"id": "claim", "label": "Claim"}]}, "points": 10}
    headers = {"Authorization": f"Bearer {token}"}
    load.lat.clear()
    chat = asyncio.create_task(load.run(conns, convs, 600))
    await asyncio.sleep(args.warmup)
    load.recording = True
    a0 = load.acks
    w = benchlib.Window([pid]).start()
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as session:
        state: dict[str, Any] = {}
        while time.monotonic() - t0 < 300:
            async with session.post(url, json=body, headers=headers) as r:
                state = (await r.json())["ok"]
            if state["done"]:
                break
            await asyncio.sleep(0.25)
    el = time.monotonic() - t0
    w.stop()
    load.recording = False
    load.running = False
    await chat
    row = {"groups": state["targets"], "posted": state["posted"], "seconds": round(el, 1),
           "posts_per_s": round(state["posted"] / el), "chat_acks_per_s": round((load.acks - a0) / w.elapsed),
           **{f"chat_{k}": v for k, v in wsload.lat_summary_ms(load.lat).items()},
           "server_cpu_pct": w.pct(w.server), "errors": dict(load.errors) or None}
    print(f"  campaign: {row['posted']:,} of {row['groups']:,} groups in {row['seconds']} s "
          f"({row['posts_per_s']:,}/s) while chatting at {row['chat_acks_per_s']:,}/s: chat ack p99 "
          f"{row['chat_p99_ms']} ms (goals: ≤ 30 s, p99 ≤ 50 ms)", flush=True)
    return row


async def run(args: argparse.Namespace) -> dict[str, Any]:
    make_token = mint()
    servers = benchlib.Servers()
    admin_port = benchlib.free_port()
    st = wsload.Stats()
    conns: list[Any] = []
    out: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "quick"}}
    try:
        await servers.start_chatd(1, ["--admin-port", str(admin_port), "--circles-per-hour", "0"],
                                  prefix="bench-service-")
        proc, port, db = servers.proc, servers.port, servers.db
        print(f"provision: {args.groups:,} groups of 15 through the admin API ...", flush=True)
        w = benchlib.Window([proc.pid]).start()
        prov = await provision(admin_port, make_token("crm", "bot", scopes=["admin"]), args.groups,
                               args.star_groups, args.concurrency)
        w.stop()
        prov.update(db_mb=round(db_size(db) / 2**20, 1), db_bytes_per_group=round(db_size(db) / args.groups),
                    server_ms_per_group=round(1000 * w.server / args.groups, 2), server_cpu_pct=w.pct(w.server))
        print(f"  {prov['groups_per_s']:,} groups/s ({prov['seconds']} s), p99 {prov['p99_ms']} ms per call, "
              f"{prov['db_mb']} MB ({prov['db_bytes_per_group']} B/group), {prov['server_ms_per_group']} ms CPU/group"
              + (f", errors {prov['errors']}" if prov["errors"] else ""), flush=True)
        out["provision"] = prov

        load = Load(args.rate)
        n_online = min(args.online, args.groups)
        owners = [f"owner{i}" for i in range(n_online)]
        print(f"connect: {n_online:,} owners and star ...", flush=True)
        conns = await wsload.connect_many(
            n_online,
            lambda i: benchlib.chatd_client(st, port, owners[i], make_token(owners[i], "owner"), "json", load.on_other),
        )
        for c in conns:
            c.ctx = {}
        star = await benchlib.chatd_client(st, port, "star", make_token("star", "staff"), "json")
        convs = {c: f"s:{owners[i]}" for i, c in enumerate(conns)}

        # -- the inbox of a staff member in star_groups groups
        waiting = conns[: min(args.waiting, args.star_groups, n_online)]
        for r in await asyncio.gather(*(c.request("send", {"conv": convs[c], "cid": "w", "text": "help"})
                                        for c in waiting)):
            benchlib.check_reply(r, "send")
        inbox: dict[str, Any] = {"star_groups": args.star_groups, "waiting": len(waiting)}
        for flt in ("all", "waiting"):
            lat, rep = await timed_calls(star, "inbox", {"filter": flt, "limit": 50}, args.calls)
            inbox[flt] = {**wsload.lat_summary_ms(lat), "rows": len(rep["rows"])}
            print(f"  inbox {flt}: first page ({len(rep['rows'])} rows) p50 {inbox[flt]['p50_ms']} ms, "
                  f"p99 {inbox[flt]['p99_ms']} ms over {args.calls} calls", flush=True)
        out["inbox"] = inbox

        # -- a reconnect after 3 of star's groups changed
        pos = benchlib.check_reply(await star.request("sync", {"since": 10**15}), "sync")["pos"]
        lat0, rep0 = await timed_calls(star, "sync", {"since": pos}, args.calls)
        star.abort()
        for c in conns[:3]:  # three of star's groups change while star is away
            benchlib.check_reply(await c.request("send", {"conv": convs[c], "cid": "r", "text": "are you there"}),
                                 "send")
        t0 = time.perf_counter_ns()
        star = await benchlib.chatd_client(st, port, "star", make_token("star", "staff"), "json")
        rep = benchlib.check_reply(await star.request("sync", {"since": pos}), "sync")
        first_ms = (time.perf_counter_ns() - t0) / 1e6
        lat3, _rep3 = await timed_calls(star, "sync", {"since": pos}, args.calls)
        out["reconnect"] = {
            "convs_changed": len(rep["convs"]), "messages": len(rep["messages"]), "reconnect_and_sync_ms":
            round(first_ms, 2), "sync_3_changed": wsload.lat_summary_ms(lat3),
            "sync_nothing_changed": wsload.lat_summary_ms(lat0), "nothing_changed_convs": len(rep0["convs"]),
        }
        print(f"  reconnect: sync returns {len(rep['convs'])} conversations, {len(rep['messages'])} messages; "
              f"sync p50 {out['reconnect']['sync_3_changed']['p50_ms']} ms (3 changed) vs "
              f"{out['reconnect']['sync_nothing_changed']['p50_ms']} ms (none changed)", flush=True)

        # -- customer messages with clocks, then circle messages, same sockets and rate
        out["campaign"] = await phase_campaign(args, admin_port, make_token("crm", "bot", scopes=["admin"]),
                                               proc.pid, load, conns, convs)
        rows = [await phase_messages(args, port, proc.pid, load, conns, convs, "service")]
        made = await asyncio.gather(*(c.request("circle.create", {"name": f"c{i}", "category": "interest"})
                                      for i, c in enumerate(conns)))
        circles = {c: benchlib.check_reply(r, "circle.create")["conv"] for c, r in zip(conns, made, strict=True)}
        joining = conns[: args.star_groups]
        for i in range(0, len(joining), 50):  # within star's request rate
            for r in await asyncio.gather(*(star.request("circle.join", {"conv": circles[c]})
                                            for c in joining[i:i + 50])):
                benchlib.check_reply(r, "circle.join")
            await asyncio.sleep(0.3)
        rows.append(await phase_messages(args, port, proc.pid, load, conns, circles, "circle"))
        out["messages"] = rows
        out["cpu_ratio_service_to_circle"] = round(rows[0]["server_us_per_msg"] / rows[1]["server_us_per_msg"], 2)
        print(f"  CPU per message, service : circle = {out['cpu_ratio_service_to_circle']} (goal ≤ 1.3)", flush=True)
        return out
    finally:
        for c in conns:
            c.abort()
        servers.stop()
        servers.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--groups", type=int, default=100_000)
    ap.add_argument("--star-groups", type=int, default=5_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--waiting", type=int, default=1_000)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--online", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=2_000)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--window", type=float, default=20.0)
    args = ap.parse_args()
    if args.quick:
        args.groups, args.star_groups, args.waiting, args.calls = 5_000, 2_000, 300, 100
        args.online, args.rate, args.warmup, args.window = 2_000, 1_000, 2.0, 6.0
    res = benchlib.run_pinned(run(args), watchdog=1800 if not args.quick else 300, fds=args.online + 200)
    rows = [{"what": "provision", "value": f"{res['provision']['groups']:,} groups in {res['provision']['seconds']} s "
             f"({res['provision']['groups_per_s']:,}/s), {res['provision']['db_mb']} MB"}]
    for flt in ("all", "waiting"):
        i = res["inbox"][flt]
        rows.append({"what": f"inbox {flt}, star in {res['inbox']['star_groups']:,} groups",
                     "value": f"p50 {i['p50_ms']} ms, p99 {i['p99_ms']} ms (goal p99 ≤ 20 ms)"})
    rc = res["reconnect"]
    rows.append({"what": "reconnect after 3 changed", "value": f"{rc['convs_changed']} convs, {rc['messages']} msgs; "
                 f"sync p50 {rc['sync_3_changed']['p50_ms']} ms vs {rc['sync_nothing_changed']['p50_ms']} ms unchanged"})
    for m in res["messages"]:
        rows.append({"what": f"{m['phase']} messages, {m['online']:,} online at {m['rate']:,}/s",
                     "value": f"ack p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms; {m['server_us_per_msg']} µs/msg"})
    cp = res["campaign"]
    rows.append({"what": f"campaign into {cp['groups']:,} groups while chatting at {cp['chat_acks_per_s']:,}/s",
                 "value": f"{cp['seconds']} s (goal ≤ 30 s), chat ack p99 {cp['chat_p99_ms']} ms (goal ≤ 50 ms)"})
    rows.append({"what": "CPU per message service : circle", "value": f"{res['cpu_ratio_service_to_circle']} (goal ≤ 1.3)"})
    table = benchlib.md_table(rows, [("what", "what"), ("figure", "value")])
    print(table)
    benchlib.save_result({"bench": "service", **res}, "service groups at scale", table, chatd=True)


if __name__ == "__main__":
    main()
