"""/proc readings of the servers under test (CPU, context switches, RSS), the rest of the
machine's load, and a measured window that takes them all."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def proc_tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _trees(pid: int | list[int]) -> list[int]:
    """``pid`` (or each pid of a list) and its live descendants, each once."""
    tree: list[int] = []
    for root in [pid] if isinstance(pid, int) else pid:
        tree.extend(p for p in proc_tree(root) if p not in tree)
    return tree


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): with the pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
    except OSError:
        return None
    return int(st[st.rindex(b")") + 2 :].split()[19])


def cpu_times(pid: int | list[int]) -> tuple[float, float]:
    """(user, system) seconds of ``pid`` (or of each pid of a list) and its live
    descendants, all threads."""
    u = s = 0
    for p in _trees(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(b")") + 2 :].split()
        u += int(fields[11])
        s += int(fields[12])
    return u / CLK_TCK, s / CLK_TCK


def ctx_switches(pid: int | list[int]) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of ``pid`` (or each of a list) and its
    live descendants, all threads (/proc/<pid>/task/*/status)."""
    vol = inv = 0
    for p in _trees(pid):
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            inv += int(line.split()[1])
            except OSError:
                continue
    return vol, inv


def rss_kb(pid: int) -> int:
    """VmRSS (KiB) of ``pid`` and its live descendants."""
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine, all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    return busy / CLK_TCK, (v[7] if len(v) > 7 else 0) / CLK_TCK


def self_cpu() -> float:
    """CPU seconds (user + system) of this process, the generator."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class OtherLoad:
    """CPU used on this machine by anything but us (server + generator) over a window.

    Other sessions share the machine; a run is only trustworthy if this stays low.
    """

    def __init__(self, server_pid: int | list[int] | None) -> None:
        self.pid = server_pid
        self.start()

    def _ours(self) -> float:
        t = self_cpu()
        if self.pid is not None:
            u, s = cpu_times(self.pid)
            t += u + s
        return t

    def start(self) -> None:
        self.m0, self.st0 = machine_cpu()
        self.o0 = self._ours()
        self.w0 = time.monotonic()

    def pct(self) -> tuple[float, float]:
        """(other %, steal %) of one core since start()."""
        m1, st1 = machine_cpu()
        el = max(time.monotonic() - self.w0, 1e-6)
        other = (m1 - self.m0) - (self._ours() - self.o0)
        return round(100 * max(other, 0.0) / el, 1), round(100 * (st1 - self.st0) / el, 1)


async def wait_quiet(limit: float = 60.0, threshold: float = 15.0, server_pid: int | list[int] | None = None) -> float:
    """Wait (at most ``limit`` s) until other processes use < ``threshold`` % of a core."""
    deadline = time.monotonic() + limit
    warned = False
    while True:
        ol = OtherLoad(server_pid)
        await asyncio.sleep(1.0)
        other, _ = ol.pct()
        if other < threshold:
            return other
        if time.monotonic() > deadline:
            print(f"  !! machine still busy ({other:.0f}% of a core used by others): measuring anyway", flush=True)
            return other
        if not warned:
            print(f"  machine busy ({other:.0f}% of a core used by others), waiting up to {limit:.0f} s", flush=True)
            warned = True


class Window:
    """The CPU a measured window cost: the servers' (``pids`` and their live children, all
    threads; user and system), each server process' if ``per_process``, Redis' kept apart
    (``redis``: one redis-server's pid, or a list of them, a Redis Cluster's nodes, summed),
    their context switches if ``ctx``, this generator's, and the others' load.

    ``start()`` and ``stop()`` take the readings in the same order, so the time between a
    reading and its counterpart is the window for each of them. After ``stop()``: ``user``,
    ``sys``, ``server`` (both), ``nodes`` (per process), ``redis_cpu``, ``ctx_switches``,
    ``redis_ctx_switches`` (all CPU in seconds), ``gen``, ``elapsed``, ``other_pct`` and
    ``steal_pct``.
    """

    def __init__(
        self, pids: list[int], redis: int | list[int] | None = None, per_process: bool = False, ctx: bool = False
    ) -> None:
        self.pids = pids
        self.redis = [redis] if isinstance(redis, int) else list(redis or [])
        self.per_process = per_process
        self.ctx = ctx

    def _read(self) -> dict[str, Any]:
        r: dict[str, Any] = {}
        r["user"], r["sys"] = cpu_times(self.pids)
        r["nodes"] = [sum(cpu_times(p)) for p in self.pids] if self.per_process else []
        r["redis"] = sum(cpu_times(self.redis)) if self.redis else 0.0
        if self.ctx:
            r["ctx"] = sum(ctx_switches(self.pids))
            r["redis_ctx"] = sum(ctx_switches(self.redis)) if self.redis else 0
        r["gen"], r["wall"] = self_cpu(), time.monotonic()
        return r

    def start(self) -> Window:
        self.r0 = self._read()
        self.others = OtherLoad(self.pids + self.redis)
        return self

    def stop(self) -> Window:
        r0, r1 = self.r0, self._read()
        self.other_pct, self.steal_pct = self.others.pct()
        self.user = r1["user"] - r0["user"]
        self.sys = r1["sys"] - r0["sys"]
        self.server = self.user + self.sys
        self.nodes = [b - a for a, b in zip(r0["nodes"], r1["nodes"], strict=True)]
        self.redis_cpu = r1["redis"] - r0["redis"]
        self.ctx_switches = r1.get("ctx", 0) - r0.get("ctx", 0)
        self.redis_ctx_switches = r1.get("redis_ctx", 0) - r0.get("redis_ctx", 0)
        self.gen = r1["gen"] - r0["gen"]
        self.elapsed = r1["wall"] - r0["wall"]
        return self

    def pct(self, seconds: float) -> float:
        """``seconds`` of CPU as a share of one core over the window (%)."""
        return round(100 * seconds / self.elapsed, 1)
