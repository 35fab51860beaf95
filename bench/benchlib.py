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
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"

_started: list[subprocess.Popen[bytes]] = []


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


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) seconds of ``pid`` and its live descendants, all threads."""
    u = s = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(b")") + 2 :].split()
        u += int(fields[11])
        s += int(fields[12])
    return u / CLK_TCK, s / CLK_TCK


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

    def __init__(self, server_pid: int | None) -> None:
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


async def wait_quiet(limit: float = 60.0, threshold: float = 15.0, server_pid: int | None = None) -> float:
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
