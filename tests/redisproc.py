"""A real ``redis-server`` per test, on a free loopback port.

``RedisProc`` runs the binary in the foreground with no persistence, in its own
temporary directory, and can be killed (SIGKILL) and started again on the same
port: what the bus tests need to lose Redis and get it back. ``redis_proc`` is
the pytest fixture (function-scoped; imported by tests/conftest.py). A missing
binary fails the test: ``scripts/test`` installs it, so skipping would only hide
tests that never ran.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
from support import free_port

MISSING = "chatd tests need redis-server: install Debian's redis-server package or put redis-server on PATH"
READY_TIMEOUT = 10.0  # seconds for a started server to answer PING
PORT_BUSY_TIMEOUT = 10.0  # seconds to keep retrying a restart while the port is taken


class RedisProcError(RuntimeError):
    pass


def ping(port: int, timeout: float = 1.0) -> bool:
    """True when something on 127.0.0.1:``port`` answers a RESP PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    return False
                data += chunk
            return data == b"+PONG\r\n"
    except OSError:
        return False


class RedisProc:
    """One ``redis-server`` on 127.0.0.1. ``port=None`` picks a free one on the
    first start and keeps it for every restart. ``cluster_bus``: cluster mode's
    bus on a free port of its own too (``--cluster-port``; by default it is
    port + 10000, which may be taken or above 65535), picked and kept likewise."""

    def __init__(
        self,
        port: int | None = None,
        binary: str | None = None,
        extra: tuple[str, ...] = (),
        cluster_bus: bool = False,
    ) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RedisProcError(MISSING)
        self.binary = found
        self._fixed_port = port is not None
        self.port = port or 0
        self.dir = Path(tempfile.mkdtemp(prefix="chatd-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.extra = extra  # more redis-server arguments
        self.cluster_bus = cluster_bus
        self.cluster_port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> RedisProc:
        """Start (or restart) the server and wait until it answers PING. A restart
        uses the same port, retrying while it is briefly taken."""
        if self.running:
            raise RedisProcError(f"redis-server already running on port {self.port}")
        if not self.port:
            self.port = free_port()
        if self.cluster_bus and not self.cluster_port:
            self.cluster_port = free_port()
        deadline = time.monotonic() + PORT_BUSY_TIMEOUT
        while True:
            outcome = self._try_start()
            if outcome == "ok":
                self.starts += 1
                return self
            # a port was taken between our pick and redis' bind (first start), or
            # is still held (restart): new picks (both: the log does not say
            # which), or the same ports again. The kernel hands out the free
            # ports it picks as the local ports of outgoing connections too.
            if time.monotonic() > deadline:
                raise RedisProcError(f"port {self.port} stayed busy for {PORT_BUSY_TIMEOUT:.0f} s:\n{self.log_tail()}")
            if not self._fixed_port and self.starts == 0:
                self.port = free_port()
                if self.cluster_bus:
                    self.cluster_port = free_port()
            time.sleep(0.05)

    def _try_start(self) -> str:
        # a listener already there (a stranger, or a leftover) would answer our PING
        if ping(self.port, timeout=0.2):
            return "busy"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--daemonize", "no",
                    "--dir", str(self.dir),
                    "--logfile", "",  # stdout, which is the log file
                    *(("--cluster-port", str(self.cluster_port)) if self.cluster_bus else ()),
                    *self.extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                if "in use" in self.log_tail():  # "Address already in use"
                    return "busy"
                raise RedisProcError(f"redis-server exited at start:\n{self.log_tail()}")
            if ping(self.port, timeout=0.5):
                return "ok"
            time.sleep(0.01)
        self.kill()
        raise RedisProcError(f"redis-server did not answer PING within {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, clients see the connection reset."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (a clean shutdown; nothing is saved), SIGKILL after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisProc:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- observing -------------------------------------------------------------

    def ping(self) -> bool:
        return ping(self.port)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the running server has used so far."""
        if self.proc is None:
            raise RedisProcError("redis-server is not running")
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        # fields after the command name, which is in parentheses and may hold spaces:
        # state is field 3, utime and stime are fields 14 and 15
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __repr__(self) -> str:
        return f"RedisProc(port={self.port}, pid={self.pid})"


@pytest.fixture
def redis_proc() -> Iterator[RedisProc]:
    """A started ``redis-server`` of its own for one test (``.url``, ``.kill()``,
    ``.start()``, ...), stopped at teardown."""
    if shutil.which("redis-server") is None:
        pytest.fail(MISSING, pytrace=False)
    proc = RedisProc()
    try:
        proc.start()
        yield proc
    finally:
        proc.close()
