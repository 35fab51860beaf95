"""Live Q&A sessions at an audience's scale (issue 12): a join storm, a host's answer to
every viewer, a vote storm, and the memory a viewer costs.

Each setup runs the same phases; the servers on core 0, this generator on core 1:

- ``floor``: bare websockets (``bench/floor_server.py``), ``--viewers`` sockets in one
  room, one of them sends a text: the answer phase's floor (send -> every socket has it).
- ``chatd``: one chatd (``--sync full``, points on), ``--viewers`` viewers.
- ``chatd2``: two chatd processes over one Redis, ``--viewers2`` viewers on each; the
  host and the voters' requests on both.

Phases of a chatd setup:

1. **connect**: every viewer connects and authenticates (its own user); RSS before and
   after = memory per authenticated idle connection.
2. **join storm**: the viewers send ``live.join`` at ``--join-rate`` a second (15,000 in
   30 s), each into a session with 60 open questions, 50 chat lines and a poll: the
   snapshot reply's latency p50/p99 (goal p99 <= 200 ms); RSS after = memory per viewer
   over an idle connection (goal <= 1 KiB).
3. **answers**: a host answers ``--answers`` questions one at a time; each answer's text
   carries a send stamp. Time to the viewer is read from the kernel's receive timestamp
   of each viewer's socket (``SO_TIMESTAMPNS``): the generator pauses reading on every
   viewer before the answer and drains them after, so its own speed at reading 15,000
   sockets is not in the figure. p50/p99/max over every viewer and answer (goal p99
   <= 100 ms), and how many viewers missed it.
4. **vote storm**: the viewers vote (and sometimes withdraw a vote) at ``--vote-rate``
   a second for ``--storm`` seconds over the open questions. Reported: votes acked per
   second, server CPU per vote, ranking pushes per viewer per second (mean, and the most
   in any 1 s window on a sample of viewers; goal <= 4), and whether the ranking each
   sampled viewer holds after the storm, and a fresh snapshot's, equal the true counts
   (the sum of the votes the server said changed something), as do the stored counts.

    .venv/bin/python bench/live.py            # 15,000 viewers; 2 x 8,000; ~8 min
    .venv/bin/python bench/live.py --quick    # 1,500 viewers; 2 x 800; ~1.5 min
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import socket
import struct
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import benchlib
import orjson
import wsload

SO_TIMESTAMPNS = 35  # Linux: the receive time of a packet as a struct timespec (CLOCK_REALTIME)
CMSG = socket.CMSG_SPACE(16)
QUESTIONS = 60
LINES = 50
SAMPLE_EVERY = 50  # one viewer in this many decodes every push and keeps the ranking


def mint() -> Any:
    src = benchlib.chatd_source()
    if src is not None and str(src) not in sys.path:
        sys.path.insert(0, str(src))
    from chatd.auth import make_token

    return make_token


class View:
    """What the generator keeps per viewer socket (``conn.ctx``)."""

    __slots__ = ("rank_t", "sample", "voted", "votes")

    def __init__(self, sample: bool) -> None:
        self.sample = sample
        self.votes: dict[int, int] = {}  # question -> votes, as this viewer holds the ranking (sample only)
        self.rank_t: list[int] = []  # arrival times of live.rank pushes (sample only)
        self.voted: set[int] = set()  # questions this viewer voted for


class Audience:
    """Routes the frames of every viewer socket: replies to requests, fire-and-forget
    vote replies, and pushes (counted; decoded on the sample)."""

    def __init__(self) -> None:
        self.rank_pushes = 0
        self.recording = False
        self.votes: dict[int, tuple[Any, int, bool, int]] = {}  # request id -> (conn, question, on, sent ns)
        self.true: Counter[int] = Counter()  # question -> votes the server said it counted
        self.acked = 0
        self.changed = 0
        self.vote_lat: list[int] = []
        self.errors: Counter[str] = Counter()

    def on_other(self, conn: Any, payload: bytes, t: int) -> None:
        if payload.startswith(b'{"push"'):
            rank = payload.find(b'"live.rank"', 0, 24) >= 0
            if rank:
                self.rank_pushes += 1
            v: View | None = conn.ctx
            if v is not None and v.sample:
                self._apply(v, orjson.loads(payload), t)
            return
        obj = orjson.loads(payload)
        rid = obj.get("id")
        if rid in conn.pending:
            wsload.WSConn.dispatch_reply(conn, payload, t)
            return
        sent = self.votes.pop(rid, None)
        if sent is None:
            return
        _conn, qid, on, t0 = sent
        if "error" in obj:
            self.errors[str(obj["error"].get("code"))] += 1
            if on:
                conn.ctx.voted.discard(qid)
            return
        self.acked += 1
        if self.recording:
            self.vote_lat.append(t - t0)
        if obj["d"]["changed"]:
            self.changed += 1
            self.true[qid] += 1 if on else -1

    def _apply(self, v: View, obj: dict[str, Any], t: int) -> None:
        kind, d = obj["push"], obj["d"]
        if kind == "live.rank":
            if self.recording:
                v.rank_t.append(t)
            for qid, n in d["votes"]:
                v.votes[qid] = n
            for qid in d["removed"]:
                v.votes.pop(qid, None)
        elif kind == "live.question":
            if d.get("state") == "open":
                v.votes[d["id"]] = d["votes"]
            else:
                v.votes.pop(d["id"], None)


async def admin(session: aiohttp.ClientSession, port: int, token: str, op: str, d: dict[str, Any]) -> dict[str, Any]:
    async with session.post(f"http://127.0.0.1:{port}/v1/{op}", json=d,
                            headers={"Authorization": f"Bearer {token}"}) as r:
        body = await r.json()
    if "ok" not in body:
        raise RuntimeError(f"{op}: {body}")
    return dict(body["ok"])


def kernel_ns(anc: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, ns = struct.unpack("qq", data[:16])
            return sec * 1_000_000_000 + ns
    return None


def first_frame_len(data: bytes) -> int:
    """The length of the first (unmasked, server) frame in ``data``, header included."""
    if len(data) < 2:
        return len(data)
    ln = data[1] & 0x7F
    if ln == 126:
        return 4 + int.from_bytes(data[2:4], "big")
    if ln == 127:
        return 10 + int.from_bytes(data[2:10], "big")
    return 2 + ln


def stamp_socket(conn: Any) -> None:
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


async def timed_fanout(viewers: list[Any], send: Any, within: float) -> dict[str, Any]:
    """Pause reading on every viewer, ``await send()`` (which sends a stamped text), then
    read the viewers' sockets ourselves, a frame at a time, in passes until each has had
    the stamped frame (or ``within`` s passed): the kernel's receive time of that frame
    minus the stamp. Frames before it go on to the connection's own parser; after it,
    the connection reads again by itself.

    Loopback TCP merges a packet into the one queued before it and gives the merged one
    the later time, so a frame must be read before the next one arrives to keep its own
    time: hence passes rather than one read after a pause. A stamped frame read with more
    bytes already behind it counts as ``mixed`` (its time may be the later packet's)."""
    for c in viewers:
        c.transport.pause_reading()
    await asyncio.sleep(0.05)
    socks = {c: socket.socket(fileno=c.transport.get_extra_info("socket").fileno()) for c in viewers}
    real_minus_mono = time.time_ns() - time.perf_counter_ns()
    lat: list[int] = []
    mixed = unframed = 0
    try:
        await send()
        pending = list(viewers)
        deadline = time.monotonic() + within
        while pending and time.monotonic() < deadline:
            still = []
            for c in pending:
                s = socks[c]
                got = False
                try:
                    while not got:
                        if c.buf:  # a frame begun before the pause: no frame boundary to read up to
                            data, anc, _f, _a = s.recvmsg(1 << 18, CMSG)
                            unframed += 1
                        else:
                            head = s.recv(10, socket.MSG_PEEK)
                            if not head:
                                break
                            data, anc, _f, _a = s.recvmsg(max(first_frame_len(head), 1), CMSG)
                        if not data:
                            break
                        j = data.find(wsload.MARK)
                        if j >= 0:
                            got = True
                            k = kernel_ns(anc)  # the receive time of the last packet of this read
                            if k is not None:
                                lat.append(k - real_minus_mono - int(data[j + 2: j + 2 + wsload.MARK_DIGITS]))
                            try:
                                mixed += bool(s.recv(1, socket.MSG_PEEK))
                            except (BlockingIOError, InterruptedError):
                                pass
                        c.data_received(data)
                except (BlockingIOError, InterruptedError):
                    pass
                if not got:
                    still.append(c)
            pending = still
            await asyncio.sleep(0)
    finally:
        for c, s in socks.items():
            s.detach()
            c.transport.resume_reading()
    return {"lat": lat, "missed": len(pending), "mixed": mixed, "unframed": unframed}


def lat_row(lat: list[int]) -> dict[str, Any]:
    row = wsload.lat_summary_ms(lat)
    return {**row, "samples": len(lat)}


# -- the floor ----------------------------------------------------------------------------


async def run_floor(args: argparse.Namespace) -> dict[str, Any]:
    st = wsload.Stats()
    servers = benchlib.Servers()
    conns: list[Any] = []
    try:
        await servers.start_floor()
        port = servers.port
        print(f"floor: {args.viewers:,} sockets in one room ...", flush=True)
        conns = await wsload.connect_many(
            args.viewers + 1, lambda i: wsload.connect(st, benchlib.HOST, port, "/room/live"), concurrency=200)
        sender, viewers = conns[0], conns[1:]
        for c in viewers:
            stamp_socket(c)
        await asyncio.sleep(1.0)
        lat: list[int] = []
        missed = mixed = 0
        for _ in range(args.answers):
            await benchlib.wait_quiet(10, server_pid=servers.proc.pid)

            async def send() -> None:
                sender.write_frame(orjson.dumps({"answer": wsload.make_text(120)}))

            r = await timed_fanout(viewers, send, args.within)
            lat += r["lat"]
            missed += r["missed"]
            mixed += r["mixed"]
        row = {"setup": "floor", "viewers": len(viewers), **lat_row(lat), "missed": missed, "mixed": mixed}
        print(f"  floor answer to {len(viewers):,}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
              f"max {row['max_ms']} ms; missed {missed}", flush=True)
        return row
    finally:
        for c in conns:
            c.abort()
        servers.close()


# -- chatd --------------------------------------------------------------------------------


async def seed(conns: list[Any], host: Any, session: str, audience: Audience) -> None:
    """60 open questions from 60 askers, 50 chat lines, a poll."""
    asks = await asyncio.gather(*(c.request("live.ask", {"session": session, "cid": "q", "text": f"问题 {i}: when?"})
                                  for i, c in enumerate(conns[:QUESTIONS])))
    for r in asks:
        benchlib.check_reply(r, "live.ask")
    for i, c in enumerate(conns[QUESTIONS:QUESTIONS + LINES]):
        benchlib.check_reply(await c.request("live.chat", {"session": session, "cid": "l",
                                                           "text": f"line {i} 加油"}), "live.chat")
    benchlib.check_reply(await host.request("poll.create", {
        "conv": session, "cid": "p", "question": "Next city?", "options": ["Hefei", "Shanghai", "Beijing"],
        "closes_ts": int(time.time() * 1000) + 3_600_000, "weighted": True}), "poll.create")


async def join_storm(viewers: list[Any], session: str, rate: int, audience: Audience) -> dict[str, Any]:
    lat: list[int] = []
    errors: Counter[str] = Counter()
    tasks: list[asyncio.Task[None]] = []

    async def one(c: Any) -> None:
        t0 = time.perf_counter_ns()
        r = await c.request("live.join", {"session": session})
        lat.append(time.perf_counter_ns() - t0)
        if "error" in r:
            errors[r["error"]["code"]] += 1
            return
        v: View = c.ctx
        if v.sample:
            for q in r["d"]["questions"]:
                v.votes[q["id"]] = q["votes"]
        v.voted |= set(r["d"]["my_votes"])

    t0 = time.monotonic()
    for i, c in enumerate(viewers):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(c)))
    await asyncio.gather(*tasks)
    el = time.monotonic() - t0
    return {"joins": len(viewers), "seconds": round(el, 1), "joins_per_s": round(len(viewers) / el),
            **wsload.lat_summary_ms(lat), "errors": dict(errors) or None}


async def vote_storm(args: argparse.Namespace, viewers: list[Any], session: str, open_ids: list[int],
                     audience: Audience, pids: list[int]) -> dict[str, Any]:
    ids = itertools.count(10**9).__next__
    order = itertools.cycle(viewers)
    rnd = random.Random(7)
    tick = 0.005
    owed = 0.0
    sent = 0

    def one() -> None:
        nonlocal sent
        c = next(order)
        v: View = c.ctx
        if v.voted and rnd.random() < 0.15:
            qid, on = rnd.choice(sorted(v.voted)), False
            v.voted.discard(qid)
        else:
            qid = rnd.choice(open_ids)
            if qid in v.voted:
                qid = rnd.choice(open_ids)
            on = True
            v.voted.add(qid)
        rid = ids()
        audience.votes[rid] = (c, qid, on, wsload.now_ns())
        c.send_obj({"id": rid, "op": "live.vote", "d": {"session": session, "id": qid, "on": on}})
        sent += 1

    async def pace(seconds: float) -> None:
        nonlocal owed
        end = time.monotonic() + seconds
        nxt = time.monotonic()
        while time.monotonic() < end:
            owed += args.vote_rate * tick
            while owed >= 1:
                owed -= 1
                one()
            nxt += tick
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    await pace(args.warmup)
    a0, p0 = audience.acked, audience.rank_pushes
    audience.recording = True
    spies = []
    if args.profile:
        for i, pid in enumerate(pids):
            out = Path(args.profile) / f"votes-p{i}.txt"
            spies.append((pid, out, benchlib.start_profile(benchlib.py_spy_bin(args.py_spy), pid, args.storm, out)))
    w = benchlib.Window(pids).start()
    await pace(args.storm)
    w.stop()
    for pid, out, spy in spies:
        await asyncio.to_thread(spy.wait, args.storm + 30)
        summ = benchlib.profile_summary(out, 30)
        print(f"  profile of process {pid} during the storm: {summ['samples']} samples -> {out}")
        for name, pct in summ["inclusive"]:
            print(f"    {pct:5.1f}%  {name}")
    audience.recording = False
    acked = audience.acked - a0
    pushes = audience.rank_pushes - p0
    t_end = time.monotonic()
    for _ in range(1800):  # a backlog the server is still working off
        if not audience.votes:
            break
        await asyncio.sleep(0.1)
    drain_s = time.monotonic() - t_end
    await asyncio.sleep(1.5)  # the last ranking push
    sample = [c.ctx for c in viewers if c.ctx.sample]
    most = 0
    for v in sample:
        ts = v.rank_t
        j = 0
        for i in range(len(ts)):
            while ts[i] - ts[j] >= 1_000_000_000:
                j += 1
            most = max(most, i - j + 1)
    truth = {q: n for q, n in audience.true.items() if n}
    wrong = sum(1 for v in sample if {q: n for q, n in v.votes.items() if n} != truth)
    return {
        "votes_sent": sent, "acks_per_s": round(acked / w.elapsed), "changed": audience.changed,
        **{f"ack_{k}": x for k, x in wsload.lat_summary_ms(audience.vote_lat).items()},
        "server_us_per_vote": round(1e6 * w.server / max(acked, 1), 1), "server_cpu_pct": w.pct(w.server),
        "gen_cpu_pct": w.pct(w.gen),
        "rank_per_viewer_per_s": round(pushes / len(viewers) / w.elapsed, 2), "rank_most_in_1s": most,
        "drain_s": round(drain_s, 1), "unanswered": len(audience.votes),
        "sample": len(sample), "sample_wrong": wrong, "errors": dict(audience.errors) or None, "truth": truth,
    }


async def run_chatd(args: argparse.Namespace, nodes: int) -> dict[str, Any]:
    make_token = mint()
    servers = benchlib.Servers()
    admin_port = benchlib.free_port()
    st = wsload.Stats()
    audience = Audience()
    conns: list[Any] = []
    label = "chatd" if nodes == 1 else f"chatd{nodes}"
    per = args.viewers if nodes == 1 else args.viewers2
    n = per * nodes
    out: dict[str, Any] = {"setup": label, "viewers": n}
    try:
        await servers.start_chatd(nodes, ["--circles-per-hour", "0", "--sync", "full"], prefix="bench-live-",
                                  first=["--admin-port", str(admin_port)])
        pids, ports = servers.pids(), servers.ports
        atok = make_token("crm", "bot", scopes=["admin"])
        async with aiohttp.ClientSession() as http:
            info = await admin(http, admin_port, atok, "live.create", {
                "cid": "bench", "title": "用户面对面 · Meet the founder", "hosts": ["host0"],
                "moderators": ["mod0"], "anonymous": True, "ask_interval_s": 0})
            session = info["session"]
            await admin(http, admin_port, atok, "live.state", {"session": session, "state": "live"})
        await benchlib.wait_quiet(30, server_pid=pids)
        rss0 = [benchlib.rss_kb(p) for p in pids]
        print(f"{label}: {n:,} viewers connect and authenticate ...", flush=True)
        t0 = time.monotonic()
        users = [f"viewer{i}" for i in range(n)]
        conns = await wsload.connect_many(n, lambda i: benchlib.chatd_client(
            st, ports[i % nodes], users[i], make_token(users[i], ("owner", "fan", "deposit")[i % 3]), "json",
            audience.on_other))
        connect_s = time.monotonic() - t0
        for i, c in enumerate(conns):
            c.ctx = View(i % SAMPLE_EVERY == 0)
            stamp_socket(c)
        host_st = wsload.Stats()
        host = await benchlib.chatd_client(host_st, ports[0], "host0", make_token("host0", "staff", roles=["host"]),
                                           "json")
        await asyncio.sleep(2.0)
        rss1 = [benchlib.rss_kb(p) for p in pids]
        await seed(conns, host, session, audience)
        await benchlib.wait_quiet(20, server_pid=pids)
        rss_seeded = [benchlib.rss_kb(p) for p in pids]

        print(f"  join storm: {n:,} joins at {args.join_rate:,}/s ...", flush=True)
        js = await join_storm(conns, session, args.join_rate, audience)
        out["join"] = js
        print(f"  join storm: {js['joins']:,} in {js['seconds']} s: snapshot p50 {js['p50_ms']} ms, "
              f"p99 {js['p99_ms']} ms (goal ≤ 200 ms)" + (f"; errors {js['errors']}" if js["errors"] else ""),
              flush=True)
        await asyncio.sleep(3.0)
        rss2 = [benchlib.rss_kb(p) for p in pids]
        idle_kib = sum(b - a for a, b in zip(rss0, rss1, strict=True)) / n
        viewer_kib = sum(b - a for a, b in zip(rss_seeded, rss2, strict=True)) / n
        out["memory"] = {"rss_base_mib": [round(x / 1024, 1) for x in rss0],
                         "rss_connected_mib": [round(x / 1024, 1) for x in rss1],
                         "rss_viewing_mib": [round(x / 1024, 1) for x in rss2],
                         "kib_per_idle_conn": round(idle_kib, 2), "kib_per_viewer_over_idle": round(viewer_kib, 2),
                         "connect_s": round(connect_s, 1)}
        print(f"  memory: {idle_kib:.2f} KiB per authenticated idle connection; a viewer adds {viewer_kib:.2f} KiB "
              f"(goal ≤ 1 KiB); {n:,} connected in {connect_s:.1f} s", flush=True)

        # -- answers
        open_ids = list(range(1, QUESTIONS + 1))
        snap = benchlib.check_reply(await host.request("live.queue", {"session": session, "state": "open",
                                                                        "limit": 200}), "live.queue")
        open_ids = [q["id"] for q in snap["questions"]]
        to_answer, open_ids = open_ids[: args.answers], open_ids[args.answers:]
        lat: list[int] = []
        missed = mixed = 0
        for qid in to_answer:
            await benchlib.wait_quiet(10, server_pid=pids)

            async def send(qid: int = qid) -> None:
                # not awaited: the reply carries the stamped text, so the host's parser counts it as a
                # delivery (host_st) instead of resolving a request
                host.send_obj({"id": 10**8 + qid, "op": "live.answer",
                               "d": {"session": session, "id": qid, "text": wsload.make_text(120)}})

            before = host_st.all_deliveries
            r = await timed_fanout(conns, send, args.within)
            for _ in range(50):
                if host_st.all_deliveries > before:
                    break
                await asyncio.sleep(0.1)
            if host_st.all_deliveries == before:
                raise RuntimeError(f"live.answer of {qid}: no reply within {args.within} s")
            lat += r["lat"]
            missed += r["missed"]
            mixed += r["mixed"]
        out["answer"] = {**lat_row(lat), "missed": missed, "mixed": mixed, "answers": len(to_answer)}
        a = out["answer"]
        print(f"  answer to {n:,} viewers ({len(to_answer)} answers): p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms, "
              f"max {a['max_ms']} ms (goal p99 ≤ 100 ms); missed {missed}", flush=True)

        # -- the vote storm
        await benchlib.wait_quiet(20, server_pid=pids)
        print(f"  vote storm: {args.vote_rate:,} votes/s for {args.storm} s over {len(open_ids)} questions ...",
              flush=True)
        vs = await vote_storm(args, conns, session, open_ids, audience, pids)
        # the stored counts, as a host's queue reads them (a viewer's snapshot would carry the stamped answers,
        # which this generator's parser takes for deliveries)
        stored = benchlib.check_reply(await host.request("live.queue", {"session": session, "state": "open",
                                                                          "limit": 200}), "live.queue")
        truth = vs.pop("truth")
        vs["stored_exact"] = {q["id"]: q["votes"] for q in stored["questions"] if q["votes"]} == truth
        out["storm"] = vs
        print(f"  vote storm: {vs['acks_per_s']:,} votes/s acked (ack p99 {vs['ack_p99_ms']} ms), "
              f"(the last reply {vs['drain_s']} s after the storm, {vs['unanswered']} unanswered), "
              f"{vs['server_us_per_vote']} µs server CPU per vote ({vs['server_cpu_pct']}% of a core), "
              f"{vs['rank_per_viewer_per_s']} ranking pushes per viewer per second, at most {vs['rank_most_in_1s']} "
              f"in a second (goal ≤ 4); sampled viewers with a wrong ranking after: {vs['sample_wrong']} of "
              f"{vs['sample']}; stored counts = the votes counted: {vs['stored_exact']}"
              + (f"; errors {vs['errors']}" if vs["errors"] else ""), flush=True)
        out["closes"] = dict(st.closes) or None
        out["lost"] = st.lost or None
        return out
    finally:
        for c in conns:
            c.abort()
        benchlib.print_log_warnings(servers.procs)
        servers.close()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for target in args.targets:
        if target == "floor":
            rows.append(await run_floor(args))
        else:
            rows.append(await run_chatd(args, 1 if target == "chatd" else 2))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--target", choices=["all", "floor", "chatd", "chatd2"], default="all")
    ap.add_argument("--viewers", type=int, default=15_000)
    ap.add_argument("--viewers2", type=int, default=8_000, help="viewers on each of the two processes")
    ap.add_argument("--join-rate", type=int, default=500)
    ap.add_argument("--answers", type=int, default=10)
    ap.add_argument("--within", type=float, default=5.0, help="s an answer has to reach every viewer")
    ap.add_argument("--vote-rate", type=int, default=10_000)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--storm", type=float, default=15.0)
    ap.add_argument("--profile", metavar="DIR", help="py-spy profiles of the servers during the vote storm "
                    "(py-spy shares core 1 with the generator: the run's figures are not saved)")
    ap.add_argument("--py-spy", help="the py-spy binary (default: $PY_SPY or on PATH)")
    args = ap.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.viewers, args.viewers2, args.answers, args.storm, args.warmup = 1_500, 800, 4, 5.0, 1.0
        args.vote_rate = 3_000
    args.targets = ["floor", "chatd", "chatd2"] if args.target == "all" else [args.target]
    rows = benchlib.run_pinned(run(args), watchdog=2400, fds=max(args.viewers, 2 * args.viewers2) + 300)
    table_rows = []
    for r in rows:
        if r["setup"] == "floor":
            table_rows.append({"setup": "floor", "viewers": r["viewers"],
                               "answer": f"p50 {r['p50_ms']} / p99 {r['p99_ms']} / max {r['max_ms']} ms"})
            continue
        m, j, a, s = r["memory"], r["join"], r["answer"], r["storm"]
        table_rows.append({
            "setup": r["setup"], "viewers": r["viewers"],
            "answer": f"p50 {a['p50_ms']} / p99 {a['p99_ms']} / max {a['max_ms']} ms, missed {a['missed']}",
            "join": f"{j['joins_per_s']}/s: p50 {j['p50_ms']} / p99 {j['p99_ms']} ms",
            "memory": f"idle {m['kib_per_idle_conn']} KiB, viewer +{m['kib_per_viewer_over_idle']} KiB",
            "votes": f"{s['acks_per_s']:,}/s acked, {s['server_us_per_vote']} µs/vote, "
                     f"{s['rank_per_viewer_per_s']} rank/viewer/s (most {s['rank_most_in_1s']} in 1 s), "
                     f"exact: {s['sample_wrong'] == 0 and s['stored_exact']}",
        })
    table = benchlib.md_table(table_rows, [("setup", "setup"), ("viewers", "viewers"), ("answer to all", "answer"),
                                           ("join storm snapshot", "join"), ("memory", "memory"),
                                           ("vote storm", "votes")])
    print(table)
    if args.profile:
        print(f"  profiled run: not saved (profiles in {args.profile})")
        return
    benchlib.save_result({"bench": "live", "args": {k: v for k, v in vars(args).items() if k != "targets"},
                          "rows": rows}, "live sessions (bench/live.py)", table, chatd=True)


if __name__ == "__main__":
    main()
