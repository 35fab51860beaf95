"""Server processes of a benchmark: start them pinned, wait for them, stop them (also from
a watchdog), and run the generator pinned to its own core."""

from __future__ import annotations

import asyncio
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from .readings import proc_tree, start_time

HOST = "127.0.0.1"

_started: list[subprocess.Popen[bytes]] = []
_cleanups: list[Callable[[], None]] = []  # servers not started by start_server (a Redis Cluster's nodes)

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def raise_nofile() -> int:
    """Raise this process' fd limit to the hard limit; returns it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def start_server(
    argv: list[str],
    core: int | None = 0,
    name: str = "server",
    env: dict[str, str] | None = None,
    log: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a server pinned to ``core`` (taskset), own session, fd limit raised.

    Its output goes to a log file (``log_tail``), or with ``log=False`` to ours."""
    cmd = (["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []) + argv
    out = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False) if log else None
    proc = subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT if log else None,
        preexec_fn=raise_nofile,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    if out is not None:
        proc.log_path = out.name  # type: ignore[attr-defined]
        out.close()
    _started.append(proc)
    print(f"  started {name} pid {proc.pid}: {shlex.join(cmd)}" + (f"  (log {out.name})" if out else ""), flush=True)
    return proc


def _kill(pid: int, born: int | None) -> None:
    if born is not None and start_time(pid) == born:  # still the same process, not a reused pid
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_server(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the server's own process group (started by us); then SIGKILL
    what it started in other sessions and left behind (a bench script run by interleave.py
    starts its servers in sessions of their own and stops them itself, unless it hangs)."""
    if proc.poll() is None:
        descendants = [(p, start_time(p)) for p in proc_tree(proc.pid)[1:]]
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
        for pid, born in descendants:
            _kill(pid, born)
    if proc in _started:
        _started.remove(proc)


def on_stop_all(fn: Callable[[], None]) -> None:
    """Have ``stop_all`` (the end of a run, the watchdog, Ctrl-C) call ``fn`` too: for
    servers started by other code (tests/redisclusterproc.py's nodes). ``fn`` must be
    safe to call after the server was already stopped."""
    _cleanups.append(fn)


def stop_all() -> None:
    for p in list(_started):
        stop_server(p, timeout=2.0)
    while _cleanups:
        try:
            _cleanups.pop()()
        except Exception as e:  # stopping the rest matters more
            print(f"  (cleanup failed: {e!r})", file=sys.stderr, flush=True)


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


def run_pinned(main: Coroutine[Any, Any, T], watchdog: int, fds: int = 0) -> T:
    """Run a benchmark's ``main`` under a watchdog of ``watchdog`` s, with the fd limit
    raised (at least ``fds`` descriptors, or SystemExit), on uvloop with this generator
    pinned to core 1, stopping every server it started (also on error or Ctrl-C)."""
    import uvloop

    try:
        install_watchdog(watchdog)
        if raise_nofile() < fds:
            raise SystemExit(f"fd limit too low for {fds} connections")
        pin_self(1)
    except BaseException:
        main.close()
        raise
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


def print_log_warnings(procs: list[subprocess.Popen[bytes]], name: str = "chatd", lines: int = 200) -> None:
    """Print the last WARNING, ERROR and Traceback lines among the last ``lines`` of each log."""
    for proc in procs:
        warn = [
            ln for ln in log_tail(proc, lines).splitlines() if "WARNING" in ln or "ERROR" in ln or "Traceback" in ln
        ]
        if warn:
            print(
                f"  {name} pid {proc.pid} log warnings/errors (last {lines} lines):\n    " + "\n    ".join(warn[-10:])
            )


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
