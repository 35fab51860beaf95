"""The servers under test: which chatd (the working tree or a copy of a git revision), starting
it, tokens and clients for it, its /metrics; the floor; a setup's processes, stopped together."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .paths import BENCH, ROOT, VENV_BIN, git_rev
from .procs import HOST, free_port, start_server, stop_server, wait_healthz
from .redis_server import start_redis, start_redis_cluster

# -- which chatd -----------------------------------------------------------------


def chatd_bin() -> str:
    exe = VENV_BIN / "chatd"
    if exe.exists():
        return str(exe)
    raise SystemExit(f"chatd is not installed ({exe} missing)")


_chatd_src: Path | None = None


def chatd_commit(rev: str) -> str:
    """The full commit hash of a git revision of this repository."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", rev + "^{commit}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def chatd_source() -> Path | None:
    """With ``BENCH_CHATD_REV`` set (a git revision), a private copy of that revision's
    ``chatd/`` and ``protocol/chatd_protocol/``, so a run is not disturbed by edits in
    progress in the working tree. Unset: None (the installed, editable working tree).
    """
    global _chatd_src
    rev = os.environ.get("BENCH_CHATD_REV")
    if not rev:
        return None
    if _chatd_src is None:
        sha = chatd_commit(rev)
        dest = Path(tempfile.gettempdir()) / f"bench-chatd-src-{sha[:12]}"
        if not dest.exists():
            tmp = Path(tempfile.mkdtemp(prefix="bench-chatd-src-"))
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", sha, "chatd", "protocol/chatd_protocol"],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
            (tmp / "protocol" / "chatd_protocol").rename(tmp / "chatd_protocol")
            tmp.rename(dest)
        print(f"  chatd from git {sha[:12]} ({rev}), copied to {dest}", flush=True)
        _chatd_src = dest
    return _chatd_src


def chatd_argv() -> list[str]:
    src = chatd_source()
    if src is None:
        return [chatd_bin()]
    code = f"import sys; sys.path.insert(0, {str(src)!r}); from chatd.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code]


def chatd_label() -> str:
    """Which chatd a run measured, as results.jsonl records it (``git <12 hex>`` for a copy)."""
    src = chatd_source()
    return f"git {src.name.rsplit('-', 1)[-1]}" if src else f"working tree (HEAD {git_rev()} + local edits)"


def chatd_available() -> bool:
    return chatd_source() is not None or ((VENV_BIN / "chatd").exists() and (ROOT / "chatd" / "cli.py").exists())


@functools.cache
def chatd_help() -> str:
    """``chatd serve --help`` (once per run: which flags this chatd has)."""
    try:
        return subprocess.run([*chatd_argv(), "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


# -- running it ----------------------------------------------------------------------


def start_chatd(port: int, db: str, extra: list[str] | None = None, core: int | None = 0) -> subprocess.Popen[bytes]:
    argv = [*chatd_argv(), "serve", "--host", HOST, "--port", str(port), "--db", db]
    if "--send-rate" in chatd_help():
        argv += ["--send-rate", "100000", "--send-burst", "100000"]
    return start_server(argv + (extra or []), core=core, name="chatd")


def start_postgres(core: int = 0) -> Any:
    """A PostgreSQL server on a free port with fsync on (tests/pgproc.py's, which the test
    suite uses with fsync off), pinned to ``core`` (0: with chatd)."""
    tests = BENCH.parent / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    from pgproc import PgProc

    pg = PgProc(durable=True)
    pg.start()
    if shutil.which("taskset"):
        subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pg.proc.pid)], capture_output=True, check=False)
    return pg


class Tokens:
    """Owner tokens for many users without one ``chatd token`` process per user.

    Uses ``chatd.auth.make_token`` (the function behind ``chatd token``, same
    development secret) when importable; otherwise runs the CLI per user.
    """

    def __init__(self) -> None:
        src = chatd_source()
        if src is not None and str(src) not in sys.path:
            sys.path.insert(0, str(src))
        try:
            from chatd.auth import make_token

            self._mint: Any = make_token
        except ImportError:
            self._mint = None

    def get(self, user: str) -> str:
        if self._mint is not None:
            return str(self._mint(user, "owner"))
        out = subprocess.run(
            [*chatd_argv(), "token", "--user", user, "--type", "owner"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]


async def chatd_client(stats: Any, port: int, user: str, token: str, proto: str = "json", on_other: Any = None) -> Any:
    """Connect and authenticate one chatd client (a ``wsload.WSConn``)."""
    import wsload

    sub = "chatd.v1.msgpack" if proto == "msgpack" else "chatd.v1.json"
    conn = await wsload.connect(stats, HOST, port, "/", (sub,), on_other)
    conn.user = user
    rep = await asyncio.wait_for(conn.request("auth", {"token": token}), 20)
    if "error" in rep:
        raise RuntimeError(f"auth of {user} failed: {rep['error']}")
    return conn


def check_reply(rep: dict[str, Any], what: str) -> dict[str, Any]:
    if "error" in rep:
        raise RuntimeError(f"{what}: {rep['error']}")
    return dict(rep.get("d", {}))


def scrape_metrics(port: int, timeout: float = 3.0) -> dict[str, float]:
    """chatd's ``GET /metrics`` (Prometheus text) as {``name{labels}``: value}."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    out: dict[str, float] = {}
    for line in data.partition(b"\r\n\r\n")[2].decode(errors="replace").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def node_floor_argv() -> list[str]:
    """``node bench/node/floor_server.js``, with its one package (``ws``, pinned in
    bench/node/package-lock.json) installed from the npm registry on first use."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        raise SystemExit("the Node floor needs node and npm (Debian: apt-get install nodejs npm)")
    folder = BENCH / "node"
    if not (folder / "node_modules" / "ws").is_dir():
        print("  installing the Node floor's ws package (npm ci) ...", flush=True)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(folder)], check=True,
                       stdout=subprocess.DEVNULL, timeout=300)
    return [node, str(folder / "floor_server.js")]


# -- one setup's processes -------------------------------------------------------------


class Servers:
    """The processes of one setup under test, stopped together: the server processes (the
    floor, or one or more chatd processes on one SQLite file), the redis-server the chatd
    processes share when there are several (or the Redis Cluster, ``bus="cluster"``), and
    the temporary directory of the file."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []  # the processes whose CPU is "server"
        self.ports: list[int] = []
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_port = 0
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        self.db = ""
        self.pg: Any = None  # tests/pgproc.PgProc, with start_chatd(store="postgresql")
        self.cluster: Any = None  # tests/redisclusterproc.RedisClusterProc, with start_chatd(bus="cluster")

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.procs[0]

    @property
    def port(self) -> int:
        return self.ports[0]

    async def start_floor(self, node: bool = False, raw: bool = False) -> None:
        """The bare websockets floor, or (``node``) Node's ``ws`` one, or (``raw``) the
        lower bound of a Python server, bench/raw_floor.py."""
        port = free_port()
        if node:
            argv = [*node_floor_argv(), "--port", str(port)]
        else:
            argv = [sys.executable, str(BENCH / ("raw_floor.py" if raw else "floor_server.py")), "--port", str(port)]
        self.procs.append(start_server(argv, core=0, name="node" if node else "raw" if raw else "floor"))
        self.ports.append(port)
        await wait_healthz(port, 30, self.procs[-1])

    async def start_chatd(self, nodes: int = 1, extra: list[str] | None = None, prefix: str = "bench-chatd-",
                          first: list[str] | None = None, store: str = "sqlite", bus: str = "redis",
                          pg_core: int = 0) -> None:
        """``nodes`` chatd processes on one SQLite file in a fresh temporary directory
        (or, ``store="postgresql"``, one database on a PostgreSQL server of their own,
        fsync on, migrated with ``chatd migrate``); with more than one, a redis-server
        they share (or, ``bus="cluster"``, a Redis Cluster of 3 masters and 3 replicas,
        its URL ``redis+cluster://`` with every node as a seed). All on core 0, PostgreSQL
        and Redis too (``pg_core``: PostgreSQL's core). ``first``: flags for the first
        process alone (its admin port, say)."""
        self.tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.db = os.path.join(self.tmp.name, "chatd.db")
        if store == "postgresql":
            self.pg = start_postgres(pg_core)
            self.db = self.pg.create_db()
            r = await asyncio.to_thread(
                subprocess.run, [*chatd_argv(), "migrate", "--db", self.db], capture_output=True, text=True, timeout=120
            )
            if r.returncode != 0:
                raise RuntimeError(f"chatd migrate failed: {r.stderr}")
        extra = list(extra or [])
        if nodes > 1 and bus == "cluster":
            self.cluster = await asyncio.to_thread(start_redis_cluster, 0)
            extra += ["--redis-url", self.cluster.url]
        elif nodes > 1:
            self.redis, self.redis_port = start_redis(core=0)
            extra += ["--redis-url", f"redis://{HOST}:{self.redis_port}/0"]
        for i in range(nodes):  # one after the other: the first one creates the schema
            port = free_port()
            proc = start_chatd(port, self.db, extra + (first or [] if i == 0 else []))
            self.procs.append(proc)
            self.ports.append(port)
            await wait_healthz(port, 30, proc)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def redis_pids(self) -> list[int]:
        """The redis-server's pid, or every node's of the Redis Cluster; [] without Redis."""
        if self.cluster is not None:
            return [n.pid for n in self.cluster.nodes if n.pid is not None]
        return [self.redis.pid] if self.redis is not None else []

    def redis_ports(self) -> list[int]:
        """The ports of the Redis processes, as ``redis_pids``."""
        if self.cluster is not None:
            return list(self.cluster.ports)
        return [self.redis_port] if self.redis is not None else []

    def all_pids(self) -> list[int]:
        return self.pids() + self.redis_pids()

    def pg_pid(self) -> int | None:
        """The postmaster (its live children, the backends, count with it)."""
        return self.pg.proc.pid if self.pg is not None and self.pg.proc is not None else None

    def exited(self) -> subprocess.Popen[bytes] | None:
        nodes = [n.proc for n in self.cluster.nodes] if self.cluster is not None else []
        return next((p for p in [*self.procs, self.redis, *nodes] if p is not None and p.poll() is not None), None)

    def stop(self) -> None:
        """Stop every process (the SQLite file stays until ``close()``)."""
        for p in self.procs:
            stop_server(p)
        if self.redis is not None:
            stop_server(self.redis)
        if self.cluster is not None:
            self.cluster.close()

    def close(self) -> None:
        self.stop()
        self.cluster = None
        if self.pg is not None:
            self.pg.close()
            self.pg = None
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None
