"""Shared helpers of the chatd benchmarks: servers, /proc readings, chatd setup, results."""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"

_started: list[subprocess.Popen[bytes]] = []


T = TypeVar("T")

# -- processes -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _raise_nofile_preexec() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_server(
    argv: list[str], core: int | None = 0, name: str = "server", env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server pinned to ``core`` (taskset), own session, fd limit raised."""
    cmd = (["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []) + argv
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_raise_nofile_preexec,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    proc.log_path = log.name  # type: ignore[attr-defined]
    log.close()
    _started.append(proc)
    print(f"  started {name} pid {proc.pid}: {shlex.join(cmd)}  (log {log.name})", flush=True)
    return proc


def stop_server(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the server's own process group (started by us)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
    if proc in _started:
        _started.remove(proc)


def stop_all() -> None:
    for p in list(_started):
        stop_server(p, timeout=2.0)


def run_pinned(main: Coroutine[Any, Any, T]) -> T:
    """Run a benchmark's ``main`` on uvloop with this generator pinned to core 1,
    stopping every server it started (also on error or Ctrl-C)."""
    import uvloop

    pin_self(1)
    try:
        return uvloop.run(main)
    finally:
        stop_all()


def log_tail(proc: subprocess.Popen[bytes], lines: int = 20) -> str:
    path = getattr(proc, "log_path", None)
    if not path:
        return ""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def install_watchdog(seconds: int) -> None:
    """Hard bound on the whole run: kill our servers and exit."""

    def fire(signum: int, frame: Any) -> None:
        print(f"\n!! watchdog: run exceeded {seconds} s, stopping", file=sys.stderr, flush=True)
        stop_all()
        os._exit(3)

    signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)

    def term(signum: int, frame: Any) -> None:
        stop_all()
        os._exit(130)

    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)


def pin_self(core: int) -> None:
    try:
        if core in os.sched_getaffinity(0) or len(os.sched_getaffinity(0)) > core:
            os.sched_setaffinity(0, {core})
    except (AttributeError, OSError) as e:
        print(f"  (could not pin generator to core {core}: {e})")


async def wait_tcp(host: str, port: int, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, w = await asyncio.open_connection(host, port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def wait_healthz(port: int, within: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + within
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_tail(proc)}")
        try:
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await asyncio.wait_for(r.read(), 2)
            w.close()
            last = data.split(b"\r\n", 1)[0].decode(errors="replace")
            if b" 200 " in data.split(b"\r\n", 1)[0] + b" ":
                return
        except (TimeoutError, OSError):
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError(f"/healthz not 200 within {within} s (last: {last!r})")


# -- /proc readings ------------------------------------------------------------


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


def cpu_times(pid: int | list[int]) -> tuple[float, float]:
    """(user, system) seconds of ``pid`` (or of each pid of a list) and its live
    descendants, all threads."""
    pids = [pid] if isinstance(pid, int) else pid
    tree: list[int] = []
    for root in pids:
        tree.extend(p for p in proc_tree(root) if p not in tree)
    u = s = 0
    for p in tree:
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
    pids = [pid] if isinstance(pid, int) else pid
    tree: list[int] = []
    for root in pids:
        tree.extend(p for p in proc_tree(root) if p not in tree)
    vol = inv = 0
    for p in tree:
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


class OtherLoad:
    """CPU used on this machine by anything but us (server + generator) over a window.

    Other sessions share the machine; a run is only trustworthy if this stays low.
    """

    def __init__(self, server_pid: int | list[int] | None) -> None:
        self.pid = server_pid
        self.start()

    def _ours(self) -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        t = ru.ru_utime + ru.ru_stime
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


# -- chatd ---------------------------------------------------------------------


def chatd_bin() -> str:
    exe = VENV_BIN / "chatd"
    if exe.exists():
        return str(exe)
    raise SystemExit(f"chatd is not installed ({exe} missing)")


_chatd_src: Path | None = None


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
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", rev + "^{commit}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
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
    src = chatd_source()
    return f"git {src.name.rsplit('-', 1)[-1]}" if src else f"working tree (HEAD {git_rev()} + local edits)"


def chatd_available() -> bool:
    return chatd_source() is not None or ((VENV_BIN / "chatd").exists() and (ROOT / "chatd" / "cli.py").exists())


def chatd_help() -> str:
    try:
        return subprocess.run([*chatd_argv(), "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def start_chatd(port: int, db: str, extra: list[str] | None = None, core: int | None = 0) -> subprocess.Popen[bytes]:
    argv = [*chatd_argv(), "serve", "--host", HOST, "--port", str(port), "--db", db]
    h = chatd_help()
    if "--send-rate" in h:
        argv += ["--send-rate", "100000", "--send-burst", "100000"]
    return start_server(argv + (extra or []), core=core, name="chatd")


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


# -- redis-server and chatd's /metrics --------------------------------------------


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


# -- sampling profiles (py-spy, optional) -------------------------------------------


def py_spy_bin(given: str | None = None) -> str:
    """py-spy: ``given``, ``$PY_SPY`` or on PATH (``pip install --target DIR py-spy``
    puts it in ``DIR/bin``; it is not a dependency of the project)."""
    exe = given or os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not exe or not os.path.exists(exe):
        raise SystemExit("py-spy not found: pass --py-spy PATH or set PY_SPY")
    return exe


def start_profile(exe: str, pid: int, seconds: float, out: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """Sample ``pid``'s Python stacks for ``seconds`` into ``out`` (collapsed stacks,
    one ``frame;frame;... count`` line per stack; idle threads are not sampled).
    py-spy itself runs on core 1 with the generator, so run profiles separately from
    the figures you keep."""
    cmd = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    cmd += [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(rate)]
    cmd += ["--format", "raw", "--output", str(out), "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _frame_name(frame: str) -> str:
    # "send (chatd/ops/messaging.py:65)" -> "send (chatd/ops/messaging.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for cut in ("site-packages/", "/lib/python3."):
        if cut in path:
            path = path.split(cut, 1)[1]
            if cut.startswith("/lib"):
                path = "stdlib/" + path.split("/", 1)[-1]
    if "/chatd/" in path:
        path = "chatd/" + path.rsplit("/chatd/", 1)[1]
    return f"{name} ({path})" if path else name


def profile_summary(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function of a py-spy raw profile."""
    self_: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {"samples": 0, "self": [], "inclusive": []}
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread (")]
        if not frames:
            continue
        self_[frames[-1]] = self_.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count

    def share(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / max(total, 1), 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "self": share(self_), "inclusive": share(incl)}


def start_perf(pids: list[int], seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """``perf record`` (cpu-clock, call graphs) of ``pids`` for ``seconds``: CPU time by
    native symbol and by kernel function (Python 3.11 frames show up as the
    interpreter's own). perf runs on core 1 with the generator."""
    cmd = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    cmd += ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-p", ",".join(map(str, pids))]
    cmd += ["-o", str(out), "--", "sleep", str(seconds)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def perf_summary(data: Path, top: int = 40) -> str:
    """Shares of CPU samples by process and library, then by symbol."""
    out = []
    for sort, limit in (("comm,dso", "0.5"), ("comm,sym", "0.4")):
        argv = ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none", "--sort", sort]
        r = subprocess.run(
            [*argv, "--percent-limit", limit],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
        out.append(f"by {sort}:\n" + "\n".join(lines[: top if sort == "comm,sym" else 30]))
    return "\n\n".join(out)


# -- results -------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import websockets

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
    }


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def save_result(res: dict[str, Any], title: str, table: str = "", chatd: bool = False) -> Path:
    """Append a JSON line to results/results.jsonl and a section to results/<date>.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.UTC)
    rec = {
        "time": now.isoformat(timespec="seconds"),
        "git": git_rev(),
        "cmd": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        **({"chatd": chatd_label()} if chatd else {}),
        **res,
    }
    with open(RESULTS / "results.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    md = RESULTS / f"{now.date().isoformat()}.md"
    with open(md, "a") as f:
        f.write(f"\n## {title} — {rec['time']} (git {rec['git']})\n\n")
        f.write(f"`{rec['cmd']}` on {rec['machine']['cpu']}, {rec['machine']['cores']} cores")
        f.write(f"; chatd: {rec['chatd']}\n\n" if chatd else "\n\n")
        if table:
            f.write(table.rstrip() + "\n")
        else:
            f.write("```json\n" + json.dumps(res, indent=1) + "\n```\n")
    print(f"  saved to {RESULTS / 'results.jsonl'} and {md}")
    return md


def md_table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h for h, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(_fmt(r.get(k)) for _, k in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if v != v:  # nan
            return "—"
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
