"""Chaos run: several chatd processes on one store and one Redis, under load, while things
break; then a checker: was every acknowledged message received by every member, once?

Set-up. ``redis-server`` on a fixed loopback port and ``--chatd`` (3) ``chatd serve``
processes on one SQLite file with ``--redis-url`` (not pinned: the two cores are shared by
everything). ``--sockets`` (10,000) users, one socket each, held by ``--gens`` (4)
load-generator subprocesses of this script (raw WebSocket clients from wsload.py, ~2,500
sockets each; half msgpack, half JSON). User *i* connects to chatd process *i* mod N (its
home), is a member of circle *i* mod C (``--circle-size`` 50: C = 200) and, for the first
``2 * --dms`` users, of one DM (``u2k`` and ``u2k+1``). Every ``--sender-every`` th user (20th)
sends, ``--rate`` (100) messages/s in all, to its circle and its DM in turn, and records
every ack (conv, seq, cid).

Clients behave like the reference client: a dropped socket reconnects after a jittered
exponential backoff (0.2 s doubling to 10 s, times 0.5 to 1, as chatd_client does), to its
home process first and to the next one on each failed attempt; after auth it runs
``sync`` from its last position (paging while ``more``); a ``resync`` push runs the same
catch-up; the position moves only with ``sync`` replies. A send whose reply was lost is
sent again with the same cid after the reconnect (``dup: true`` acks are recorded too).

Faults, at ``--schedule`` seconds after the load starts (default
``30:kill,75:redis-restart,120:redis-pause,165:storm``):

- ``kill``: kill -9 of the chatd process holding the most sockets (by /proc/PID/fd), started
  again on its port ``--restart-after`` (2) s later;
- ``redis-restart``: kill -9 of redis-server, started again on the same port 1 s later;
- ``redis-pause``: SIGSTOP of redis-server for ``--pause`` (5) s, then SIGCONT;
- ``storm``: every generator aborts every socket at once: all ``--sockets`` clients
  reconnect together.

Then the senders stop, every outstanding send is retried until acked, and after a final
catch-up (``sync``) of every member the checker compares, for every acknowledged message,
what each member of its conversation received (pushes, sync pages):

- *lost*: (message, member) pairs acknowledged but never received, and the messages with
  any; each lost message is looked up in the store with ``history``;
- *duplicated*: a cid received at two different (conv, seq) (a send stored twice), after
  dedup by (conv, seq); and the raw duplicates before dedup (the same (conv, seq) received
  again: expected around reconnects and catch-up, dropped by clients);
- *time back* per fault: for each socket the fault dropped, from the fault to its next
  successful auth and to the end of its catch-up, p50/p99/max over those sockets, against
  ``--goal`` (30 s for every socket caught up); sockets told to resync (Redis faults, a
  killed peer's lease running out) and the time to their catch-up are reported beside.

Bounded: a watchdog stops everything after the run's own bound; Ctrl-C or an error stops
every process it started.

    nice -n 10 .venv/bin/python bench/chaos.py            # 10,000 sockets, ~7 min
    nice -n 10 .venv/bin/python bench/chaos.py --quick    # 1,000 sockets, ~2 min
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import benchlib
import orjson
import wsload

HOST = benchlib.HOST
now = time.monotonic  # CLOCK_MONOTONIC: one clock for every process on the machine
BACKOFF_MIN, BACKOFF_MAX = 0.2, 10.0  # chatd_client's defaults
SYNC_PAGE = 1000
SUBS = (("chatd.v1.msgpack",), ("chatd.v1.json",))


def backoff(attempt: int) -> float:
    """chatd_client.connection's backoff: doubling from 0.2 s to 10 s, jittered 0.5 to 1."""
    ceiling = min(BACKOFF_MAX, BACKOFF_MIN * 2.0 ** min(attempt, 30))
    return max(BACKOFF_MIN, ceiling * random.uniform(0.5, 1.0))


# ============================================================================
# the population: who is where, in which conversations
# ============================================================================


def plan(args: argparse.Namespace) -> dict[str, Any]:
    n = args.sockets
    circles = max(1, n // args.circle_size)
    dms = min(args.dms, n // 2)
    return {
        "sockets": n,
        "circles": circles,
        "dms": dms,
        "sender_every": args.sender_every,
        "rate": args.rate,
        "gens": args.gens,
    }


def user(i: int) -> str:
    return f"u{i}"


def circle_of(i: int, p: dict[str, Any]) -> int:
    return i % int(p["circles"])


def dm_peer(i: int, p: dict[str, Any]) -> int | None:
    if i < 2 * int(p["dms"]):
        return i ^ 1
    return None


def dm_conv(a: int, b: int) -> str:
    x, y = sorted((user(a), user(b)))
    return f"dm:{x}:{y}"


def is_sender(i: int, p: dict[str, Any]) -> bool:
    """Every n-th member of each circle (its owner first): the senders are spread over the circles."""
    return (i // int(p["circles"])) % int(p["sender_every"]) == 0


# ============================================================================
# a load generator (a subprocess: ``chaos.py --gen PLAN``)
# ============================================================================


class Conn(wsload.WSConn):
    """wsload's client with a future that ends when the connection does."""

    ctx_port = 0  # the chatd process' port

    def connection_made(self, transport: Any) -> None:
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.lost.done():
            self.lost.set_result(None)


class Member:
    __slots__ = (
        "acks",
        "attempts",
        "auth_t",
        "caught_t",
        "conn",
        "convs",
        "disc_t",
        "filled",
        "final_ok",
        "home",
        "i",
        "k",
        "lock",
        "online",
        "outstanding",
        "pos",
        "recv",
        "resync_done_t",
        "resync_t",
        "retry",
        "sender",
        "sub",
        "sync_log",
        "token",
        "user",
    )

    def __init__(self, i: int, token: str, convs: list[str], home: int, sender: bool) -> None:
        self.i = i
        self.user = user(i)
        self.token = token
        self.convs = convs  # its circle first, its DM (if any) second
        self.home = home
        self.sender = sender
        self.sub = SUBS[i % 2]
        self.conn: Conn | None = None
        self.online = False  # authenticated on self.conn
        self.pos: int | None = None  # sync position (None until the load starts)
        self.lock = asyncio.Lock()  # one catch-up at a time
        self.recv: dict[str, bytearray] = {}  # conv -> count per seq
        self.disc_t: list[float] = []  # a live socket dropped
        self.auth_t: list[float] = []
        self.caught_t: list[float] = []  # catch-up after a (re)connect done
        self.resync_t: list[float] = []
        self.resync_done_t: list[float] = []
        self.attempts = 0  # failed connection attempts
        self.k = 0  # sends made
        self.outstanding: dict[str, tuple[str, float]] = {}  # cid -> (conv, first sent)
        self.retry: list[str] = []  # cids whose reply was lost with a socket
        self.acks: list[tuple[str, int, str, bool, float]] = []
        self.sync_log: list[tuple[float, int, int, int, int, bool]] = []  # t, port, since, pos, messages, more
        self.final_ok = False  # the final catch-up (sync, then the gap fill) completed
        self.filled: list[tuple[str, int]] = []  # (conv, seq) first received from history (a seq gap filled)


class Gen:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.p = spec["plan"]
        self.ports: list[int] = spec["ports"]
        self.g: int = spec["gen"]
        self.stats = wsload.Stats()
        self.members: list[Member] = []
        self.by_user: dict[str, Member] = {}
        self.content: dict[tuple[str, int], str] = {}  # (conv, seq) -> cid, first received
        self.pos_of: dict[tuple[str, int], int] = {}  # (conv, seq) -> pos, first received
        self.history_calls = 0
        self.mismatch = 0  # the same (conv, seq) received with another cid
        self.got: Counter[str] = Counter()  # receipts by source
        self.raw_dups: Counter[str] = Counter()  # receipts of a (conv, seq) already received, by source
        self.foreign = 0  # a message of a conversation the member is not in
        self.fail_why: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # send error replies by code
        self.epoch_resets = 0
        self.stopping = False
        self.sending = False
        self.push_lat_max = 0.0  # ms, since the last tick
        self.tick_pushes = 0
        self.acked_total = 0
        self.sends_total = 0
        self.syncs = 0

    # -- receiving ----------------------------------------------------------------

    def on_frame(self, conn: wsload.WSConn, payload: bytes, t: int) -> None:
        obj = conn.loads(payload)
        if not isinstance(obj, dict):
            return
        if "id" in obj:
            fut = conn.pending.pop(obj["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(obj)
            return
        kind = obj.get("push")
        m: Member = conn.ctx
        if m.pos is None:  # the set-up's own messages, before the load's start position
            return
        if kind == "msg":
            d = obj["d"]
            self.record(m, d, "push")
            lat = time.time() * 1000 - d.get("ts", 0)
            self.tick_pushes += 1
            if lat > self.push_lat_max:
                self.push_lat_max = lat
        elif kind == "resync":
            m.resync_t.append(now())
            if m.pos is not None:
                asyncio.get_running_loop().create_task(self.resync(m, conn))

    def record(self, m: Member, msg: dict[str, Any], src: str) -> None:
        conv, seq = msg["conv"], msg["seq"]
        arr = m.recv.get(conv)
        if arr is None:
            if conv not in m.convs:
                self.foreign += 1
                return
            arr = m.recv[conv] = bytearray(seq + 64)
        if seq >= len(arr):
            arr.extend(bytes(seq - len(arr) + 64))
        c = arr[seq]
        if c < 255:
            arr[seq] = c + 1
        self.got[src] += 1
        cid = msg.get("cid")
        if c:
            self.raw_dups[src] += 1
        elif cid is not None:
            key = (conv, seq)
            prev = self.content.get(key)
            if prev is None:
                self.content[key] = cid
                self.pos_of[key] = msg["pos"]
            elif prev != cid:
                self.mismatch += 1

    async def call(self, conn: Conn, op: str, d: dict[str, Any], within: float = 30.0) -> dict[str, Any]:
        rep = await asyncio.wait_for(conn.request(op, d), within)
        if "error" in rep:
            raise RuntimeError(f"{op}: {rep['error'].get('code')}")
        return dict(rep.get("d") or {})

    async def catch_up(self, m: Member, conn: Conn, within: float = 30.0) -> None:
        """``sync`` from the member's position until ``more`` is false (caller holds m.lock)."""
        assert m.pos is not None
        while True:
            since = m.pos
            t = now()
            d = await self.call(conn, "sync", {"since": since, "limit": SYNC_PAGE}, within)
            self.syncs += 1
            msgs = d.get("messages") or ()
            m.sync_log.append((round(t, 3), conn.ctx_port, since, d["pos"], len(msgs), bool(d.get("more"))))
            for msg in d.get("messages") or ():
                self.record(m, msg, "sync")
            if d["pos"] < since:
                self.epoch_resets += 1
            m.pos = d["pos"]
            if not d.get("more"):
                return

    async def fill_gaps(self, m: Member, conn: Conn) -> None:
        """What the reference client does on a seq gap: the missing seqs between the first
        and the last received of each conversation, from ``history``."""
        for conv, arr in m.recv.items():
            have = [s for s, c in enumerate(arr) if c]
            if not have:
                continue
            holes = [s for s in range(have[0], have[-1]) if not arr[s]]
            while holes:
                top = holes[-1]
                d = await self.call(conn, "history", {"conv": conv, "before": top + 1, "limit": 100})
                self.history_calls += 1
                for msg in d.get("messages") or ():
                    if msg["seq"] in holes and not arr[msg["seq"]]:
                        m.filled.append((conv, msg["seq"]))
                    if not arr[msg["seq"]]:
                        self.record(m, msg, "history")
                holes = [h for h in holes if h < top - 99 and not arr[h]]

    async def resync(self, m: Member, conn: Conn) -> None:
        async with m.lock:
            if conn is not m.conn or conn.closed:
                return  # the reconnect catches up
            try:
                await self.catch_up(m, conn)
                m.resync_done_t.append(now())
            except (RuntimeError, ConnectionError, TimeoutError) as exc:
                self.fail_why["resync " + type(exc).__name__] += 1

    # -- a member's socket, for the whole run ---------------------------------------

    async def connect(self, m: Member, port: int) -> Conn:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: Conn(self.stats, HOST, port, "/", m.sub, self.on_frame), HOST, port),
            10,
        )
        conn.ctx = m
        conn.ctx_port = port
        try:
            await asyncio.wait_for(conn.opened, 10)
        except BaseException:
            conn.abort()
            raise
        return conn

    async def life(self, m: Member) -> None:
        attempt = 0
        while not self.stopping:
            port = self.ports[(m.home + attempt) % len(self.ports)]
            conn: Conn | None = None
            try:
                conn = await self.connect(m, port)
                await self.call(conn, "auth", {"token": m.token}, within=20)
                m.conn, m.online = conn, True
                m.auth_t.append(now())
                if m.pos is not None:
                    async with m.lock:
                        await self.catch_up(m, conn)
                    m.caught_t.append(now())
                attempt = 0
                self.resend(m)
                await conn.lost
                if not self.stopping:
                    m.disc_t.append(now())
            except (OSError, RuntimeError, TimeoutError, ConnectionError) as exc:
                m.attempts += 1
                self.fail_why[type(exc).__name__ + ": " + str(exc)[:50]] += 1
                attempt += 1
                if conn is not None:
                    conn.abort()
            finally:
                m.online = False
            if self.stopping:
                break
            await asyncio.sleep(backoff(attempt))

    # -- sending -------------------------------------------------------------------

    def send(self, m: Member, cid: str, conv: str) -> None:
        conn = m.conn
        assert conn is not None
        fut = conn.request("send", {"conv": conv, "cid": cid, "text": f"chaos {cid}"})
        fut.add_done_callback(lambda f: self.on_reply(m, cid, f))

    def on_reply(self, m: Member, cid: str, fut: asyncio.Future[Any]) -> None:
        if cid not in m.outstanding:
            return
        if fut.cancelled() or fut.exception() is not None:
            m.retry.append(cid)  # the socket went: again after the reconnect
            return
        rep = fut.result()
        if "error" in rep:
            err = rep["error"]
            self.refused[str(err.get("code"))] += 1
            if err.get("temporary"):
                asyncio.get_running_loop().call_later(
                    max(0.2, err.get("retry_after_ms", 200) / 1000), lambda: self.retry_one(m, cid)
                )
            else:
                m.outstanding.pop(cid, None)
            return
        d = rep["d"]
        _, first = m.outstanding.pop(cid)
        m.acks.append((d["conv"], d["seq"], cid, bool(d.get("dup")), round(now() - first, 4)))
        self.acked_total += 1

    def retry_one(self, m: Member, cid: str) -> None:
        if cid in m.outstanding:
            if m.online and m.conn is not None and not m.conn.closed:
                self.send(m, cid, m.outstanding[cid][0])
            else:
                m.retry.append(cid)

    def resend(self, m: Member) -> None:
        retry, m.retry = m.retry, []
        for cid in dict.fromkeys(retry):
            if cid in m.outstanding:
                self.send(m, cid, m.outstanding[cid][0])

    async def send_loop(self) -> None:
        senders = [m for m in self.members if m.sender]
        if not senders:
            return
        share = len(senders) / max(1, sum(1 for i in range(self.p["sockets"]) if is_sender(i, self.p)))
        rate = self.p["rate"] * share
        t0 = now()
        made = 0
        rr = itertools.cycle(senders)
        while self.sending:
            await asyncio.sleep(0.02)
            due = int((now() - t0) * rate) - made
            made += due
            for _ in range(due):
                for _ in range(len(senders)):  # the next sender that is online
                    m = next(rr)
                    if m.online and m.conn is not None and not m.conn.closed and len(m.outstanding) < 8:
                        break
                else:
                    break  # nobody online: this tick's messages are not made
                conv = m.convs[m.k % len(m.convs)]
                cid = f"{m.user}.{m.k}"
                m.k += 1
                m.outstanding[cid] = (conv, now())
                self.sends_total += 1
                self.send(m, cid, conv)

    # -- commands from the orchestrator ---------------------------------------------

    def emit(self, **kw: Any) -> None:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    async def ticker(self) -> None:
        while not self.stopping:
            await asyncio.sleep(1.0)
            self.emit(
                ev="tick",
                t=now(),
                online=sum(1 for m in self.members if m.online),
                acked=self.acked_total,
                sent=self.sends_total,
                pushes=self.tick_pushes,
                push_lat_max_ms=round(self.push_lat_max, 1),
                outstanding=sum(len(m.outstanding) for m in self.members),
            )
            self.tick_pushes = 0
            self.push_lat_max = 0.0

    async def wait_online(self, within: float) -> int:
        deadline = now() + within
        while now() < deadline:
            missing = sum(1 for m in self.members if not m.online)
            if not missing:
                return 0
            await asyncio.sleep(0.25)
        return sum(1 for m in self.members if not m.online)

    async def setup(self, circles: dict[str, str]) -> None:
        """Members join their circle; the lower user of each DM pair opens it."""

        async def one(m: Member) -> None:
            assert m.conn is not None
            c = circle_of(m.i, self.p)
            if m.i != c:  # user c owns circle c
                await self.call(m.conn, "circle.join", {"conv": circles[str(c)]}, within=300)
            peer = dm_peer(m.i, self.p)
            if peer is not None and peer > m.i:
                d = await self.call(m.conn, "dm.open", {"user": user(peer)}, within=300)
                assert d["conv"] == dm_conv(m.i, peer), d

        await asyncio.gather(*(one(m) for m in self.members))

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        tokens = benchlib.Tokens()
        for i in range(self.g, self.p["sockets"], self.p["gens"]):
            convs = [f"circle#{circle_of(i, self.p)}"]
            peer = dm_peer(i, self.p)
            if peer is not None:
                convs.append(dm_conv(i, peer))
            m = Member(i, tokens.get(user(i)), convs, i % len(self.ports), is_sender(i, self.p))
            self.members.append(m)
            self.by_user[m.user] = m
        lives: list[asyncio.Task[None]] = []
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        ticker = loop.create_task(self.ticker())
        sem = asyncio.Semaphore(200)  # the final catch-up: 200 syncs at a time
        for m in self.members:  # the first connections, 200 started every 50 ms
            lives.append(loop.create_task(self.life(m)))
            if len(lives) % 200 == 0:
                await asyncio.sleep(0.05)
        left = await self.wait_online(300)
        self.emit(ev="connected", missing=left)
        sender_task: asyncio.Task[None] | None = None
        while True:
            line = await reader.readline()
            if not line:  # the orchestrator is gone
                break
            cmd = json.loads(line)
            what = cmd["cmd"]
            if what == "create":  # the circles whose owners are ours
                out = {}
                for c in cmd["circles"]:
                    m = self.by_user[user(c)]
                    assert m.conn is not None
                    d = await self.call(m.conn, "circle.create", {"name": f"chaos {c}", "category": "interest"})
                    out[str(c)] = d["conv"]
                self.emit(ev="created", circles=out)
            elif what == "setup":
                circles = cmd["circles"]
                for m in self.members:
                    m.convs[0] = circles[str(circle_of(m.i, self.p))]
                await self.setup(circles)
                self.emit(ev="setup")
            elif what == "start":
                for m in self.members:
                    m.pos = cmd["pos"]
                self.sending = True
                sender_task = loop.create_task(self.send_loop())
                self.emit(ev="started")
            elif what == "storm":
                t = now()
                for m in self.members:
                    if m.conn is not None:
                        m.conn.abort()
                self.emit(ev="storm", t=t)
            elif what == "stop-sending":
                self.sending = False
                if sender_task is not None:
                    await sender_task
                deadline = now() + cmd.get("within", 60)
                while now() < deadline and any(m.outstanding for m in self.members):
                    for m in self.members:
                        if m.retry and m.online:
                            self.resend(m)
                    await asyncio.sleep(0.5)
                self.emit(ev="stopped", outstanding=sum(len(m.outstanding) for m in self.members))
            elif what == "final":
                missing = await self.wait_online(cmd.get("within", 120))
                failed = 0

                async def final(m: Member) -> None:
                    nonlocal failed
                    async with sem:
                        try:
                            conn = m.conn
                            if conn is None or not m.online:
                                raise ConnectionError("offline")
                            async with m.lock:
                                await self.catch_up(m, conn, within=120)
                                await self.fill_gaps(m, conn)
                            m.final_ok = True
                        except (RuntimeError, ConnectionError, TimeoutError):
                            failed += 1

                tasks = [loop.create_task(final(m)) for m in self.members]
                _, late = await asyncio.wait(tasks, timeout=cmd.get("bound", 600))
                for task in late:  # not caught up within the bound: counted, not waited for
                    task.cancel()
                failed += len(late)
                self.stopping = True
                self.write(cmd["out"], missing, failed)
                self.emit(ev="final", missing=missing, failed=failed, late=len(late))
                break
        self.stopping = True
        self.sending = False
        ticker.cancel()
        for m in self.members:
            if m.conn is not None:
                m.conn.abort()
        for t in lives:
            t.cancel()
        await asyncio.gather(*lives, ticker, return_exceptions=True)

    def write(self, path: str, missing: int, failed: int) -> None:
        members = []
        for m in self.members:
            recv = {conv: [[s, c] for s, c in enumerate(arr) if c] for conv, arr in m.recv.items()}
            members.append(
                {
                    "user": m.user,
                    "convs": m.convs,
                    "recv": recv,
                    "disc": m.disc_t,
                    "auth": m.auth_t,
                    "caught": m.caught_t,
                    "resync": m.resync_t,
                    "resync_done": m.resync_done_t,
                    "attempts": m.attempts,
                    "acks": m.acks,
                    "syncs": m.sync_log,
                    "filled": m.filled,
                    "final_ok": m.final_ok,
                    "unacked": [[cid, conv] for cid, (conv, _) in m.outstanding.items()],
                }
            )
        out = {
            "gen": self.g,
            "members": members,
            "content": [[c, s, cid, self.pos_of[(c, s)]] for (c, s), cid in self.content.items()],
            "history_calls": self.history_calls,
            "mismatch": self.mismatch,
            "got": dict(self.got),
            "raw_dups": dict(self.raw_dups),
            "foreign": self.foreign,
            "fail_why": dict(self.fail_why.most_common(12)),
            "refused": dict(self.refused),
            "epoch_resets": self.epoch_resets,
            "closes": {str(k): v for k, v in self.stats.closes.items()},
            "lost_conns": self.stats.lost,
            "syncs": self.syncs,
            "missing_at_final": missing,
            "final_failed": failed,
        }
        Path(path).write_bytes(orjson.dumps(out))


def gen_main(spec_path: str) -> None:
    import uvloop

    benchlib.raise_nofile()
    # wsload takes any data frame holding b"@T" for a latency-marked delivery and never decodes
    # it; a msgpack frame can hold those two bytes by chance (pos 16468 is 0xcd 0x40 0x54): this
    # generator decodes every frame, so no frame may match
    wsload.MARK = b"\x00\xff chaos: no marker \xff\x00"
    spec = json.loads(Path(spec_path).read_text())
    uvloop.run(Gen(spec).main())


# ============================================================================
# the orchestrator
# ============================================================================


class Procs:
    """Redis, the chatd processes and the generators, each stoppable and restartable."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.db = str(tmp / "chatd.db")
        self.redis_port = benchlib.free_port()
        self.redis: subprocess.Popen[bytes] | None = None
        self.ports = [benchlib.free_port() for _ in range(args.chatd)]
        self.chatd: list[subprocess.Popen[bytes] | None] = [None] * args.chatd
        self.gens: list[subprocess.Popen[bytes]] = []

    def chatd_extra(self) -> list[str]:
        return [
            "--redis-url", f"redis://{HOST}:{self.redis_port}/0",
            "--circles-per-hour", "0",
            "--new-dms-per-hour", "0",
            "--log-level", "warning",
        ]  # fmt: skip

    async def start_redis(self) -> None:
        binary = "/usr/bin/redis-server"
        argv = [binary, "--port", str(self.redis_port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--daemonize", "no", "--dir", str(self.tmp), "--logfile", "", "--maxclients", "1000"]
        deadline = now() + 15
        while True:
            self.redis = benchlib.start_server(argv, core=None, name="redis")
            while now() < deadline and self.redis.poll() is None:
                with contextlib.suppress(OSError):
                    if benchlib.redis_command(self.redis_port, "PING", timeout=0.5) == b"+PONG":
                        return
                await asyncio.sleep(0.05)
            benchlib.stop_server(self.redis)
            if now() > deadline:
                raise RuntimeError("redis-server did not start on its port again")
            await asyncio.sleep(0.2)

    async def start_chatd(self, k: int) -> None:
        proc = benchlib.start_chatd(self.ports[k], self.db, self.chatd_extra(), core=None)
        self.chatd[k] = proc
        await benchlib.wait_healthz(self.ports[k], 60, proc)

    def kill9(self, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc is not None:
            benchlib.stop_server(proc)  # forgets it

    def fds(self, k: int) -> int:
        proc = self.chatd[k]
        if proc is None or proc.poll() is not None:
            return -1
        try:
            return len(os.listdir(f"/proc/{proc.pid}/fd"))
        except OSError:
            return -1

    def start_gen(self, g: int, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
        path = self.tmp / f"gen{g}.json"
        path.write_text(json.dumps(spec))
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--gen", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.tmp / f"gen{g}.log", "wb"),
            start_new_session=True,
            preexec_fn=benchlib.raise_nofile,
        )
        benchlib.procs._started.append(proc)  # stopped with the servers (watchdog, Ctrl-C)
        self.gens.append(proc)
        return proc


class Orchestrator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.p = plan(args)
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
        self.procs = Procs(args, self.tmp)
        self.events: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self.ticks: dict[int, dict[str, Any]] = {}
        self.timeline: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.t_load = 0.0
        self.final_s = 0.0

    async def read_gen(self, g: int, proc: subprocess.Popen[bytes]) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        assert proc.stdout is not None
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), proc.stdout)
        while line := await reader.readline():
            ev = json.loads(line)
            if ev["ev"] == "tick":
                self.ticks[g] = ev
            else:
                await self.events[g].put(ev)

    def tell(self, g: int, **cmd: Any) -> None:
        stdin = self.procs.gens[g].stdin
        assert stdin is not None
        stdin.write((json.dumps(cmd) + "\n").encode())
        stdin.flush()

    async def expect(self, what: str, within: float) -> list[dict[str, Any]]:
        out = []
        for g in range(len(self.procs.gens)):
            try:
                ev = await asyncio.wait_for(self.events[g].get(), within)
            except TimeoutError:
                raise RuntimeError(
                    f"generator {g}: no {what!r} within {within:.0f} s; see {self.tmp}/gen{g}.log"
                ) from None
            if ev["ev"] != what:
                raise RuntimeError(f"generator {g}: {ev} instead of {what!r}")
            out.append(ev)
        return out

    def online(self) -> int:
        return sum(t.get("online", 0) for t in self.ticks.values())

    async def sampler(self) -> None:
        last_acked = 0
        while True:
            await asyncio.sleep(1.0)
            if not self.t_load:
                continue
            acked = sum(t.get("acked", 0) for t in self.ticks.values())
            rec = {
                "t": round(now() - self.t_load, 1),
                "online": self.online(),
                "acks_per_s": acked - last_acked,
                "pushes_per_s": sum(t.get("pushes", 0) for t in self.ticks.values()),
                "push_lat_max_ms": max((t.get("push_lat_max_ms", 0) for t in self.ticks.values()), default=0),
                "outstanding": sum(t.get("outstanding", 0) for t in self.ticks.values()),
                "chatd_fds": [self.procs.fds(k) for k in range(self.args.chatd)],
            }
            last_acked = acked
            self.timeline.append(rec)
            if int(rec["t"]) % 5 == 0:
                print(
                    f"  t={rec['t']:6.1f}s online {rec['online']:6,}  acks/s {rec['acks_per_s']:5}  "
                    f"pushes/s {rec['pushes_per_s']:6}  push lag max {rec['push_lat_max_ms']:8.1f} ms  "
                    f"outstanding {rec['outstanding']:5}  chatd fds {rec['chatd_fds']}",
                    flush=True,
                )

    # -- faults -----------------------------------------------------------------------

    async def fault(self, kind: str, arg: float | None) -> None:
        a = self.args
        rec: dict[str, Any] = {"kind": kind, "at_s": round(now() - self.t_load, 1), "online_before": self.online()}
        if kind == "kill":
            fds = [self.procs.fds(k) for k in range(a.chatd)]
            k = max(range(a.chatd), key=lambda j: fds[j])
            rec.update(process=k, fds=fds[k])
            rec["t0"] = now()
            self.procs.kill9(self.procs.chatd[k])
            print(f"  !! kill -9 chatd {k} (port {self.procs.ports[k]}, {fds[k]} fds)", flush=True)
            await asyncio.sleep(arg if arg is not None else a.restart_after)
            t = now()
            await self.procs.start_chatd(k)
            rec["restarted_after_s"] = round(now() - rec["t0"], 2)
            print(f"  !! chatd {k} back in {now() - t:.1f} s", flush=True)
        elif kind == "redis-restart":
            rec["t0"] = now()
            self.procs.kill9(self.procs.redis)
            print("  !! kill -9 redis-server", flush=True)
            await asyncio.sleep(arg if arg is not None else 1.0)
            await self.procs.start_redis()
            rec["restarted_after_s"] = round(now() - rec["t0"], 2)
            print(f"  !! redis-server back after {rec['restarted_after_s']} s", flush=True)
        elif kind == "redis-pause":
            assert self.procs.redis is not None
            secs = arg if arg is not None else a.pause
            rec["t0"] = now()
            os.kill(self.procs.redis.pid, signal.SIGSTOP)
            print(f"  !! SIGSTOP redis-server for {secs} s", flush=True)
            try:
                await asyncio.sleep(secs)
            finally:
                os.kill(self.procs.redis.pid, signal.SIGCONT)
            rec["paused_s"] = secs
            print("  !! SIGCONT redis-server", flush=True)
        elif kind == "storm":
            rec["t0"] = now()
            for g in range(len(self.procs.gens)):
                self.tell(g, cmd="storm")
            evs = await self.expect("storm", 30)
            rec["abort_spread_ms"] = round(1000 * (max(e["t"] for e in evs) - rec["t0"]), 1)
            print(
                f"  !! reconnect storm: every generator aborted every socket ({rec['online_before']:,} open)",
                flush=True,
            )
        else:
            raise SystemExit(f"unknown fault {kind!r}")
        self.faults.append(rec)

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        a, p = self.args, self.p
        loop = asyncio.get_running_loop()
        await self.procs.start_redis()
        for k in range(a.chatd):  # one after the other: the first one creates the schema
            await self.procs.start_chatd(k)
        readers = []
        for g in range(a.gens):
            spec = {"plan": p, "ports": self.procs.ports, "gen": g}
            proc = self.procs.start_gen(g, spec)
            self.events[g] = asyncio.Queue()
            readers.append(loop.create_task(self.read_gen(g, proc)))
        sampler = loop.create_task(self.sampler())
        try:
            t = now()
            evs = await self.expect("connected", 400)
            print(f"  {p['sockets']:,} sockets connected and authenticated in {now() - t:.1f} s "
                  f"(missing {sum(e['missing'] for e in evs)})", flush=True)  # fmt: skip
            t = now()
            owners: dict[int, list[int]] = defaultdict(list)
            for c in range(p["circles"]):
                owners[c % a.gens].append(c)
            for g in range(a.gens):
                self.tell(g, cmd="create", circles=owners[g])
            circles: dict[str, str] = {}
            for ev in await self.expect("created", 300):
                circles.update(ev["circles"])
            for g in range(a.gens):
                self.tell(g, cmd="setup", circles=circles)
            await self.expect("setup", 600)
            print(f"  {p['circles']} circles and {p['dms']} DMs set up in {now() - t:.1f} s", flush=True)
            self.circles = circles
            pos = await self.head()
            for g in range(a.gens):
                self.tell(g, cmd="start", pos=pos)
            await self.expect("started", 30)
            self.t_load = now()
            print(f"  load started at position {pos}: {p['rate']} msg/s from "
                  f"{sum(1 for i in range(p['sockets']) if is_sender(i, p))} senders, for {a.duration} s", flush=True)  # fmt: skip
            for at, kind, arg in parse_schedule(a.schedule):
                wait = self.t_load + at - now()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.fault(kind, arg)
            wait = self.t_load + a.duration - now()
            if wait > 0:
                await asyncio.sleep(wait)
            for g in range(a.gens):
                self.tell(g, cmd="stop-sending", within=60)
            evs = await self.expect("stopped", 120)
            print(f"  senders stopped; outstanding sends {sum(e['outstanding'] for e in evs)}", flush=True)
            await asyncio.sleep(a.settle)
            t = now()
            outs = [str(self.tmp / f"result{g}.json") for g in range(a.gens)]
            for g in range(a.gens):
                self.tell(g, cmd="final", within=120, bound=a.final_bound, out=outs[g])
            evs = await self.expect("final", 120 + a.final_bound + 120)
            self.final_s = round(now() - t, 1)
            print(f"  final catch-up of every member in {self.final_s} s (offline {sum(e['missing'] for e in evs)}, "
                  f"failed {sum(e['failed'] for e in evs)}, of them not done within {a.final_bound:g} s: "
                  f"{sum(e['late'] for e in evs)})", flush=True)  # fmt: skip
            sampler.cancel()
            results = [load_result(o) for o in outs]
            report = self.check(results)
            await self.store_lookup(report)
            return report
        finally:
            sampler.cancel()
            for r in readers:
                r.cancel()
            for proc in self.procs.gens:
                if proc.stdin is not None:
                    with contextlib.suppress(OSError):
                        proc.stdin.close()
            logs = [self.procs.chatd[k] for k in range(a.chatd) if self.procs.chatd[k] is not None]
            benchlib.print_log_warnings([x for x in logs if x is not None])

    async def head(self) -> int:
        """The store's position now, from an auth reply (every write of the set-up was acked)."""
        st = wsload.Stats()
        conn = await wsload.connect(st, HOST, self.procs.ports[0], "/", ("chatd.v1.json",))
        try:
            rep = await asyncio.wait_for(conn.request("auth", {"token": benchlib.Tokens().get("observer")}), 30)
            return int(benchlib.check_reply(rep, "auth")["pos"])
        finally:
            conn.abort()

    # -- the checker -----------------------------------------------------------------------

    def check(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        a, p = self.args, self.p
        members: dict[str, dict[str, Any]] = {}
        for r in results:
            for m in r["members"]:
                members[m["user"]] = m
        conv_members: dict[str, list[str]] = defaultdict(list)
        for u, m in members.items():
            for c in m["convs"]:
                conv_members[c].append(u)
        # what was acknowledged: (conv, seq) -> cid, and cid -> the (conv, seq)s it was acked at
        acked: dict[tuple[str, int], str] = {}
        ack_conflicts = 0
        cid_acked: dict[str, set[tuple[str, int]]] = defaultdict(set)
        dup_acks = 0
        ack_lat: list[float] = []
        for m in members.values():
            for conv, seq, cid, dup, lat in m["acks"]:
                key = (conv, seq)
                if acked.setdefault(key, cid) != cid:
                    ack_conflicts += 1
                cid_acked[cid].add(key)
                dup_acks += dup
                ack_lat.append(lat)
        acked_twice = sum(1 for keys in cid_acked.values() if len(keys) > 1)
        # stored twice: a cid received at two (conv, seq); content that disagrees with the ack
        content: dict[tuple[str, int], str] = {}
        pos_of: dict[tuple[str, int], int] = {}
        mismatch = sum(r["mismatch"] for r in results)
        for r in results:
            for c, s, cid, mpos in r["content"]:
                pos_of[(c, s)] = mpos
                prev = content.setdefault((c, s), cid)
                if prev != cid:
                    mismatch += 1
        # what was received, by member: by pushes and sync (the catch-up), and after filling seq gaps
        lost_pairs = 0  # after the catch-up and the gap fill
        lost_msgs: dict[tuple[str, int], list[str]] = {}
        lost_sync = 0  # by pushes and sync alone (history receipts not counted)
        lost_sync_msgs: set[tuple[str, int]] = set()
        covered = 0  # ... of them inside a sync reply's range (since, pos] that did not hold them
        pairs = 0
        lost_ok = 0  # lost pairs of members whose final catch-up completed
        lost_not_caught_up = 0  # ... of members whose final catch-up did not
        raw_dup_acked = 0
        recv = {u: {c: dict(lst) for c, lst in m["recv"].items()} for u, m in members.items()}
        filled = {u: {tuple(x) for x in m["filled"]} for u, m in members.items()}
        for key in acked:
            conv, seq = key
            for u in conv_members.get(conv, ()):
                pairs += 1
                n = recv[u].get(conv, {}).get(seq, 0)
                ok = members[u].get("final_ok", True)
                if n == 0:
                    lost_pairs += 1
                    lost_msgs.setdefault(key, []).append(u)
                    if ok:
                        lost_ok += 1
                    else:
                        lost_not_caught_up += 1
                elif n > 1:
                    raw_dup_acked += n - 1
                if n == 0 or key in filled[u]:
                    lost_sync += 1
                    lost_sync_msgs.add(key)
                    mpos = pos_of.get(key)
                    if mpos is not None and any(sy[2] < mpos <= sy[3] for sy in members[u]["syncs"]):
                        covered += 1
        cid_at: dict[str, set[tuple[str, int]]] = defaultdict(set)
        for key, cid in content.items():
            cid_at[cid].add(key)
        stored_twice = sum(1 for keys in cid_at.values() if len(keys) > 1)
        ack_vs_content = sum(1 for key, cid in acked.items() if key in content and content[key] != cid)
        unacked = [u for m in members.values() for u in m["unacked"]]
        unacked_seen = sum(1 for cid, _ in unacked if cid in cid_at)
        raw_dups: Counter[str] = Counter()
        got: Counter[str] = Counter()
        for r in results:
            raw_dups.update(r["raw_dups"])
            got.update(r["got"])
        # time back after each fault
        faults = []
        for f in self.faults:
            faults.append(self.time_back(f, members))
        goal_met = all(f["goal_met"] == "yes" for f in faults)
        closes: Counter[str] = Counter()
        fail_why: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        for r in results:
            closes.update(r["closes"])
            fail_why.update(r["fail_why"])
            refused.update(r["refused"])
        ack_lat.sort()
        out = {
            "bench": "chaos",
            "sockets": p["sockets"],
            "chatd_processes": a.chatd,
            "generators": a.gens,
            "circles": p["circles"],
            "circle_size": a.circle_size,
            "dms": p["dms"],
            "senders": sum(1 for i in range(p["sockets"]) if is_sender(i, p)),
            "rate": p["rate"],
            "duration_s": a.duration,
            "schedule": a.schedule,
            "goal_s": a.goal,
            "acked_messages": len(acked),
            "acks": sum(len(m["acks"]) for m in members.values()),
            "dup_acks": dup_acks,
            "ack_p50_s": round(wsload.percentile(ack_lat, 0.5), 3) if ack_lat else None,  # type: ignore[arg-type]
            "ack_p99_s": round(wsload.percentile(ack_lat, 0.99), 3) if ack_lat else None,  # type: ignore[arg-type]
            "ack_max_s": round(ack_lat[-1], 3) if ack_lat else None,
            "unacked_at_end": len(unacked),
            "unacked_received": unacked_seen,
            "refused": dict(refused),
            "member_pairs": pairs,
            "lost_pairs": lost_pairs,
            "lost_pairs_caught_up": lost_ok,
            "lost_pairs_not_caught_up": lost_not_caught_up,
            "members_not_caught_up": sum(1 for m in members.values() if not m.get("final_ok", True)),
            "lost_pairs_before_gap_fill": lost_sync,
            "lost_messages_before_gap_fill": len(lost_sync_msgs),
            "skipped_by_covering_sync": covered,
            "history_calls": sum(r["history_calls"] for r in results),
            "lost_messages": len(lost_msgs),
            "lost_examples": [[c, s, us[:5], len(us)] for (c, s), us in list(lost_msgs.items())[:20]],
            "stored_twice": stored_twice,
            "acked_at_two_seqs": acked_twice,
            "ack_conflicts": ack_conflicts,
            "content_mismatch": mismatch + ack_vs_content,
            "raw_dup_receipts_of_acked": raw_dup_acked,
            "raw_dups_by_source": dict(raw_dups),
            "receipts_by_source": dict(got),
            "foreign": sum(r["foreign"] for r in results),
            "epoch_resets": sum(r["epoch_resets"] for r in results),
            "syncs": sum(r["syncs"] for r in results),
            "final_catch_up_s": self.final_s,
            "offline_at_final": sum(r["missing_at_final"] for r in results),
            "final_failed": sum(r["final_failed"] for r in results),
            "closes": dict(closes),
            "connect_failures": dict(fail_why.most_common(8)),
            "faults": faults,
            "goal_met": goal_met,
            "timeline": self.timeline,
        }
        return out

    def time_back(self, f: dict[str, Any], members: dict[str, dict[str, Any]]) -> dict[str, Any]:
        t0 = f["t0"]
        window = 5.0 if f["kind"] != "redis-pause" else f.get("paused_s", 5) + 5
        back: list[float] = []
        caught: list[float] = []
        never = 0
        for m in members.values():
            drops = [d for d in m["disc"] if t0 - 0.5 <= d <= t0 + window]
            if not drops:
                continue
            d = drops[0]
            a = next((x for x in m["auth"] if x > d), None)
            c = next((x for x in m["caught"] if x > d), None)
            if a is None or c is None:
                never += 1
                continue
            back.append(a - t0)
            caught.append(c - t0)
        resync: list[float] = []
        resync_never = 0
        for m in members.values():
            got = [x for x in m["resync"] if t0 <= x <= t0 + 60]
            if not got:
                continue
            done = next((x for x in m["resync_done"] if x > got[0]), None)
            # a socket that reconnected meanwhile caught up by its reconnect
            alt = next((x for x in m["caught"] if x > got[0]), None)
            end = min(x for x in (done, alt) if x is not None) if (done or alt) else None
            if end is None:
                resync_never += 1
            else:
                resync.append(end - t0)
        back.sort()
        caught.sort()
        resync.sort()

        def q(v: list[float], x: float) -> float | None:
            return round(wsload.percentile(v, x), 2) if v else None  # type: ignore[arg-type]

        rec = {k: v for k, v in f.items() if k != "t0"}
        rec.update(
            dropped=len(back) + never,
            back_p50_s=q(back, 0.5),
            back_p99_s=q(back, 0.99),
            back_max_s=round(back[-1], 2) if back else None,
            caught_p50_s=q(caught, 0.5),
            caught_p99_s=q(caught, 0.99),
            caught_max_s=round(caught[-1], 2) if caught else None,
            never_back=never,
            resynced=len(resync) + resync_never,
            resync_p99_s=q(resync, 0.99),
            resync_max_s=round(resync[-1], 2) if resync else None,
            resync_never=resync_never,
        )
        rec["goal_met"] = "yes" if never == 0 and (not caught or caught[-1] <= self.args.goal) else "no"
        return rec

    async def store_lookup(self, report: dict[str, Any]) -> None:
        """For lost messages: is the message in the store (``history`` as a member)?"""
        tokens = benchlib.Tokens()
        st = wsload.Stats()
        for ex in report["lost_examples"]:
            conv, seq, users, _ = ex
            try:
                conn = await benchlib.chatd_client(st, self.procs.ports[0], users[0], tokens.get(users[0]))
                try:
                    rep = await asyncio.wait_for(
                        conn.request("history", {"conv": conv, "before": seq + 1, "limit": 1}), 30
                    )
                    msgs = benchlib.check_reply(rep, "history").get("messages") or []
                    ex.append("in store" if msgs and msgs[0]["seq"] == seq else "NOT in store")
                finally:
                    conn.abort()
            except (OSError, RuntimeError, TimeoutError) as exc:
                ex.append(f"lookup failed: {exc}")


def load_result(path: str) -> dict[str, Any]:
    return dict(orjson.loads(Path(path).read_bytes()))


def parse_schedule(text: str) -> list[tuple[float, str, float | None]]:
    out = []
    for part in filter(None, (s.strip() for s in text.split(","))):
        bits = part.split(":")
        out.append((float(bits[0]), bits[1], float(bits[2]) if len(bits) > 2 else None))
    return sorted(out)


def render(res: dict[str, Any]) -> str:
    lines = [
        f"{res['sockets']:,} sockets on {res['chatd_processes']} chatd processes (one SQLite file, one Redis), "
        f"{res['generators']} generators; {res['circles']} circles of {res['circle_size']}, {res['dms']} DMs; "
        f"{res['senders']} senders at {res['rate']} msg/s for {res['duration_s']} s; faults {res['schedule']}",
        f"acknowledged messages {res['acked_messages']:,} ({res['acks']:,} acks, {res['dup_acks']} with dup: true); "
        f"ack latency p50 {res['ack_p50_s']} s, p99 {res['ack_p99_s']} s, max {res['ack_max_s']} s; "
        f"unacked at the end {res['unacked_at_end']} (of them received by someone: {res['unacked_received']}); "
        f"refusals {res['refused'] or 0}",
        f"LOST after catch-up (pushes + sync): {res['lost_pairs_before_gap_fill']:,} of {res['member_pairs']:,} "
        f"(message, member) pairs, {res['lost_messages_before_gap_fill']} messages; of those pairs "
        f"{res['skipped_by_covering_sync']:,} inside a sync reply's (since, pos] that did not hold them",
        f"LOST after also filling seq gaps with history (as the reference client does; "
        f"{res['history_calls']} history calls): {res['lost_pairs']:,} pairs, {res['lost_messages']} messages; "
        f"of members whose final catch-up completed {res['lost_pairs_caught_up']:,}, of the "
        f"{res['members_not_caught_up']:,} whose final catch-up did not {res['lost_pairs_not_caught_up']:,}",
        f"DUPLICATED after dedup by (conv, seq): {res['stored_twice']} cids stored at two seqs "
        f"(acked at two seqs: {res['acked_at_two_seqs']}, conflicting acks {res['ack_conflicts']}, "
        f"content mismatches {res['content_mismatch']})",
        f"raw duplicates before dedup: {res['raw_dup_receipts_of_acked']:,} receipts of acked messages; "
        f"by source {res['raw_dups_by_source']}; receipts {res['receipts_by_source']}",
        f"final catch-up: {res['final_catch_up_s']} s, offline {res['offline_at_final']}, failed or not done "
        f"{res['final_failed']}; syncs {res['syncs']:,}; "
        f"epoch resets {res['epoch_resets']}; foreign messages {res['foreign']}",
        f"close codes received {res['closes']}; connection failures {res['connect_failures']}",
    ]
    if res["lost_examples"]:
        lines.append(f"lost examples (conv, seq, members, count, store): {res['lost_examples'][:10]}")
    table = benchlib.md_table(
        res["faults"],
        [
            ("fault", "kind"), ("at s", "at_s"), ("sockets dropped", "dropped"), ("back p50 s", "back_p50_s"),
            ("back p99 s", "back_p99_s"), ("back max s", "back_max_s"), ("caught up p99 s", "caught_p99_s"),
            ("caught up max s", "caught_max_s"), ("never back", "never_back"), ("resynced", "resynced"),
            ("resync caught up p99 s", "resync_p99_s"), ("max s", "resync_max_s"), ("goal met", "goal_met"),
        ],
    )  # fmt: skip
    verdict = [
        f"zero lost after catch-up (pushes + sync): {'PASS' if res['lost_pairs_before_gap_fill'] == 0 else 'FAIL'}",
        f"zero lost after catch-up and gap fill: {'PASS' if res['lost_pairs'] == 0 else 'FAIL'}",
        f"zero duplicated after dedup: {'PASS' if res['stored_twice'] == 0 and res['content_mismatch'] == 0 else 'FAIL'}",
        f"every dropped socket back and caught up within {res['goal_s']:g} s of each fault: "
        f"{'PASS' if res['goal_met'] else 'FAIL'}",
    ]
    return "\n".join(lines) + "\n\n" + table + "\n\n" + "\n".join(verdict)


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    orch = Orchestrator(args)
    print(f"  work dir {orch.tmp}", flush=True)
    try:
        return await orch.run()
    finally:
        for proc in orch.procs.gens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
        benchlib.stop_all()
        if not args.keep:
            for f in orch.tmp.iterdir():
                with contextlib.suppress(OSError):
                    f.unlink()
            with contextlib.suppress(OSError):
                orch.tmp.rmdir()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gen", help=argparse.SUPPRESS)
    ap.add_argument("--sockets", type=int, default=10_000, help="client sockets, one user each (10,000)")
    ap.add_argument("--chatd", type=int, default=3, help="chatd processes (3)")
    ap.add_argument("--gens", type=int, default=4, help="load-generator processes (4)")
    ap.add_argument("--circle-size", type=int, default=50, help="members per circle (50)")
    ap.add_argument("--dms", type=int, default=1000, help="DMs (1,000; each of two users)")
    ap.add_argument("--sender-every", type=int, default=20, help="every n-th user sends (20)")
    ap.add_argument("--rate", type=float, default=100, help="messages/s, all senders together (100)")
    ap.add_argument("--duration", type=float, default=225, help="seconds of load (225)")
    ap.add_argument("--schedule", default="30:kill,75:redis-restart,120:redis-pause,165:storm",
                    help="faults: SECONDS:KIND[:ARG],... (kill, redis-restart, redis-pause, storm)")  # fmt: skip
    ap.add_argument("--restart-after", type=float, default=2.0, help="seconds before a killed chatd restarts (2)")
    ap.add_argument("--pause", type=float, default=5.0, help="seconds Redis is stopped (5)")
    ap.add_argument("--settle", type=float, default=25.0, help="seconds after the senders stop (25: leases run out)")
    ap.add_argument("--final-bound", type=float, default=600, help="seconds for the final catch-up (600)")
    ap.add_argument("--goal", type=float, default=30.0, help="seconds for every dropped socket to be back (30)")
    ap.add_argument("--quick", action="store_true", help="1,000 sockets, 2 generators, faults every 15 s")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, generator results)")
    ap.add_argument("--no-save", action="store_true", help="print only: no results/<date>.md, results.jsonl")
    args = ap.parse_args()
    if args.gen:
        gen_main(args.gen)
        return
    if args.quick:
        args.sockets, args.gens, args.duration = min(args.sockets, 1000), 2, 75
        args.schedule = "10:kill,25:redis-restart,40:redis-pause:3,55:storm"
    watchdog = int(args.duration + 1500 + args.final_bound + args.sockets / 20)
    benchlib.install_watchdog(watchdog)
    benchlib.raise_nofile()
    import uvloop

    try:
        res = uvloop.run(orchestrate(args))
    finally:
        benchlib.stop_all()
    text = render(res)
    print(text, flush=True)
    if not args.no_save:
        saved = {k: v for k, v in res.items() if k != "timeline"}
        benchlib.save_result(saved, f"chaos {args.sockets} sockets", text, chatd=True)


if __name__ == "__main__":
    main()
