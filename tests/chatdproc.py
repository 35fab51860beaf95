"""A real ``chatd serve`` process for tests: start, wait for /healthz, kill -9, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

from support import ROOT

CHATD = ROOT / ".venv" / "bin" / "chatd"

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, db: Path, port: int, log: Path, *args: str) -> None:
        self.db, self.port, self.log = db, port, log
        self.args = args  # extra ``chatd serve`` arguments
        self.env: dict[str, str] = {}  # extra environment (e.g. PYTHONPATH for test hooks)
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.p = subprocess.Popen(
                [
                    str(CHATD),
                    "serve",
                    "--port",
                    str(self.port),
                    "--db",
                    str(self.db),
                    "--sync",
                    "full",
                    "--send-rate",
                    "10000",
                    "--send-burst",
                    "10000",
                    "--log-level",
                    "warning",
                    *self.args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env},
            )

    async def healthy(self, wait: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            assert self.p is not None and self.p.poll() is None, self.log.read_text()
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = await reader.read()
                writer.close()
                await writer.wait_closed()
                if data.startswith(b"HTTP/1.1 200"):
                    return
            await asyncio.sleep(0.05)
        raise AssertionError("chatd did not become healthy:\n" + self.log.read_text())

    def kill9(self) -> None:
        assert self.p is not None
        os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(5)

    def stop(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
