"""A real ``chatd serve`` process for tests: start, wait for /healthz, kill -9, stop."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from support import ROOT, eventually, healthz

CHATD = ROOT / ".venv" / "bin" / "chatd"


class Proc:
    def __init__(self, db: Path | str, port: int, log: Path, *args: str) -> None:
        # db: a SQLite file, or a postgresql:// URL
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
        async def up() -> bool:
            assert self.p is not None and self.p.poll() is None, self.log.read_text()
            return await healthz(self.port)

        await eventually(up, wait, 0.05, lambda: "chatd did not become healthy:\n" + self.log.read_text())

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
