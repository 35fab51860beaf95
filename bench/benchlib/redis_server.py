"""A private redis-server (or a Redis Cluster of them) for the multi-process setups, and what
their INFO says."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from .paths import BENCH
from .procs import HOST, free_port, log_tail, on_stop_all, start_server, stop_server


def redis_command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """One RESP command to 127.0.0.1:``port``; the raw reply (simple or bulk string)."""
    cmd = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
    )
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(cmd)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if data[:1] in (b"+", b"-", b":") and data.endswith(b"\r\n"):
                break
            if data[:1] == b"$":
                head, _, rest = data.partition(b"\r\n")
                n = int(head[1:])
                if n < 0 or len(rest) >= n + 2:
                    break
    if data[:1] == b"$":
        head, _, rest = data.partition(b"\r\n")
        return rest[: int(head[1:])] if int(head[1:]) >= 0 else b""
    return data.rstrip(b"\r\n")


def start_redis(core: int | None = 0) -> tuple[subprocess.Popen[bytes], int]:
    """A ``redis-server`` on a free loopback port, no persistence, pinned to ``core``
    like the servers (own process group: ``stop_server``/``stop_all`` stop it)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        raise SystemExit("redis-server is not installed (Debian package redis-server)")
    workdir = tempfile.gettempdir()  # nothing is written there: no RDB, no AOF
    for _ in range(5):
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--daemonize", "no", "--dir", workdir, "--logfile", ""]
        proc = start_server(argv, core=core, name="redis")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if redis_command(port, "PING", timeout=0.5) == b"+PONG":
                    return proc, port
            except OSError:
                pass
            time.sleep(0.02)
        stop_server(proc)  # port taken meanwhile, or it died: another port
    raise RuntimeError(f"redis-server did not start:\n{log_tail(proc)}")


def redis_info(port: int, section: str = "commandstats") -> dict[str, str]:
    """``INFO <section>`` as a flat dict (``cmdstat_publish`` -> ``calls=..,usec=..``)."""
    out: dict[str, str] = {}
    for line in redis_command(port, "INFO", section).decode().splitlines():
        if ":" in line and not line.startswith("#"):
            k, _, v = line.partition(":")
            out[k] = v
    return out


def redis_cmdstats(port: int) -> dict[str, dict[str, float]]:
    """Per command: calls, usec (Redis' own time in the command, not I/O)."""
    out: dict[str, dict[str, float]] = {}
    for k, v in redis_info(port, "commandstats").items():
        if k.startswith("cmdstat_"):
            fields = dict(kv.split("=", 1) for kv in v.split(","))
            out[k[8:]] = {f: float(fields[f]) for f in ("calls", "usec") if f in fields}
    return out


def start_redis_cluster(core: int | None = 0) -> Any:
    """A Redis Cluster of 3 masters and 3 replicas on free loopback ports, no persistence
    (tests/redisclusterproc.py's ``RedisClusterProc``, which the test suite uses), every
    node pinned to ``core`` like a single ``start_redis`` (all threads, ``taskset -a``), so
    that a comparison with one redis-server on core 0 gives both the same core. Returned
    started (``.url``, ``.ports``, ``.nodes`` with ``.pid``, ``.master_ports()``); ``stop_all``
    (the end of the run, the watchdog) closes it too."""
    tests = BENCH.parent / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    from redisclusterproc import RedisClusterProc

    cluster = RedisClusterProc()
    on_stop_all(cluster.close)
    try:
        cluster.start()
        if core is not None and shutil.which("taskset"):
            for node in cluster.nodes:
                subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(node.pid)], capture_output=True, check=False)
    except BaseException:
        cluster.close()
        raise
    print(f"  started a Redis Cluster (3 masters + 3 replicas) on ports {cluster.ports}, pids "
          f"{[n.pid for n in cluster.nodes]}, masters {cluster.master_ports()}", flush=True)
    return cluster


def redis_cmdstats_sum(ports: list[int], commands: tuple[str, ...] = ("publish", "spublish")) -> dict[str, float]:
    """``commands``' calls and in-command usec summed over several servers (a cluster's
    nodes), with ``cmd_calls``: every command's calls summed. A node that does not answer
    counts nothing."""
    out = {"calls": 0.0, "usec": 0.0, "cmd_calls": 0.0}
    for port in ports:
        try:
            cs = redis_cmdstats(port)
        except OSError:
            continue
        for c in commands:
            out["calls"] += cs.get(c, {}).get("calls", 0)
            out["usec"] += cs.get(c, {}).get("usec", 0)
        out["cmd_calls"] += sum(v.get("calls", 0) for v in cs.values())
    return out
