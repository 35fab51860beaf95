"""The setups under test of fanout.py and the load they get: the floor or chatd (1 process,
2 or 3 over one Redis, 3 over a Redis Cluster) with 5,000 connections in circles, each
circle's sender, the open-loop driver, and chatd's and Redis' counters read around a window."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable

import benchlib
import orjson
import wsload

NODES = {"floor": 1, "node": 1, "raw": 1, "chatd": 1, "chatd2": 2, "chatd3": 3, "chatd3c": 3}  # server processes
BUS = {"chatd3c": "cluster"}  # the targets on a Redis Cluster (3 masters + 3 replicas); the others: one redis-server
FLOORS = ("floor", "node", "raw")  # bare websockets (Python), Node's ws, bare uvloop (raw_floor.py)
TARGETS = {
    "both": ["floor", "node", "chatd"],
    "all": ["floor", "node", "chatd", "chatd2"],
    "cluster": ["chatd", "chatd2"],
    "floor": ["floor"],
    "node": ["node"],
    "raw": ["raw"],
    "floors": ["floor", "node"],
    "bound": ["floor", "node", "raw", "chatd"],  # with the Python lower bound, raw_floor.py
    "chatd": ["chatd"],
    "chatd2": ["chatd2"],
    "bus": ["chatd3", "chatd3c"],  # 3 processes over one Redis, then over a Redis Cluster (issue 14)
    "chatd3": ["chatd3"],
    "chatd3c": ["chatd3c"],
}


class Target(benchlib.Servers):
    """One server under test (one or several processes, maybe a redis-server),
    with its connections, grouped by circle."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.stats = wsload.Stats()
        self.circles: list[list[wsload.WSConn]] = []
        self.convs: list[str] = []
        self.send: Callable[[int, int], None] = lambda c, n: None
        self.setup_s = 0.0
        self.masters: list[int] = []  # a Redis Cluster's master ports, read after setup

    def close(self) -> None:
        for circle in self.circles:
            for c in circle:
                c.abort()
        super().close()


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
    await t.start_floor(node=t.name == "node", raw=t.name == "raw")
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


async def setup_chatd(
    t: Target,
    circles: int,
    members: int,
    size: int,
    proto: str,
    extra: list[str],
    nodes: int = 1,
    split: str = "member",
    bus: str = "redis",
) -> None:
    """``nodes`` > 1: that many chatd processes on one SQLite file and a redis-server
    (``bus="cluster"``: a Redis Cluster, 3 masters + 3 replicas); member m of circle c
    connects to process (c + m) % nodes, so each circle is split evenly and the circles'
    senders (m = 0) rotate over the processes.
    ``split="circle"`` (analysis): every member of circle c on process c % nodes, so
    messages are still published to Redis but nobody on the other process needs them."""
    await t.start_chatd(nodes, extra, bus=bus)
    if t.cluster is not None:
        t.masters = await asyncio.to_thread(t.cluster.master_ports)
    t0 = time.monotonic()
    tokens = benchlib.Tokens()
    users = [f"f{i // members}_{i % members}" for i in range(circles * members)]

    def port_of(i: int) -> int:
        if split == "circle":
            return t.ports[(i // members) % nodes]
        return t.ports[(i // members + i % members) % nodes]

    conns = await wsload.connect_many(
        len(users), lambda i: benchlib.chatd_client(t.stats, port_of(i), users[i], tokens.get(users[i]), proto)
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


def counters(t: Target) -> dict[str, float]:
    """chatd's counters summed over its processes, and Redis' PUBLISH stats (PUBLISH and
    SPUBLISH, summed over every node of a Redis Cluster)."""
    out: Counter[str] = Counter()
    if t.name.startswith("chatd"):
        for port in t.ports:
            try:
                m = benchlib.scrape_metrics(port)
            except OSError:
                continue
            out["messages"] += m.get('chatd_messages_total{kind="text"}', 0)
            out["deliveries"] += m.get("chatd_deliveries_total", 0)
            out["commits"] += m.get("chatd_store_batch_size_count", 0)
            out["commit_s"] += m.get("chatd_store_commit_seconds_sum", 0)
            out["published"] += m.get("chatd_bus_published_total", 0)
            out["received"] += m.get("chatd_bus_received_total", 0)
            out["dropped"] += m.get("chatd_bus_dropped_total", 0)
            out["gaps_filled"] += m.get("chatd_bus_gaps_filled_total", 0)
    if t.redis is not None:
        cs = benchlib.redis_cmdstats(t.redis_port)
        out["redis_publish_calls"] = cs.get("publish", {}).get("calls", 0)
        out["redis_publish_usec"] = cs.get("publish", {}).get("usec", 0)
        out["redis_cmd_calls"] = sum(v.get("calls", 0) for v in cs.values())
    elif t.cluster is not None:
        every = benchlib.redis_cmdstats_sum(t.redis_ports())
        out["redis_publish_calls"] = every["calls"]
        out["redis_publish_usec"] = every["usec"]
        out["redis_cmd_calls"] = every["cmd_calls"]
        # the masters' alone: a replica also counts the SPUBLISHes its master propagates to it
        out["redis_master_publish_calls"] = benchlib.redis_cmdstats_sum(t.masters)["calls"]
    return dict(out)
