"""A real PostgreSQL server for the tests, on a free loopback port.

``PgProc`` runs ``initdb`` into a temporary folder and ``postgres`` in the
foreground on 127.0.0.1, as the Debian package's ``postgres`` user when the tests
run as root (PostgreSQL refuses to run as root), with trust authentication for the
role ``chatd``. It can be killed (SIGKILL) and started again on the same port and
data. ``fsync`` is off, as the SQLite server tests run with ``--sync normal``: a
killed process loses nothing the OS has (what the kill tests do); what a power cut
would lose is PostgreSQL's own tested property, not chatd's.

``pg_server`` (session-scoped) is one server for the whole run; ``pg_url`` (per
test) a fresh, empty database on it. Missing binaries fail the test with what to
install: ``scripts/test`` installs Debian's ``postgresql`` package, so skipping
would only hide tests that never ran.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port

MISSING = (
    "chatd tests need PostgreSQL's server binaries (initdb, postgres): install Debian's postgresql "
    "package or set CHATD_PG_BIN to the folder holding them"
)
READY_TIMEOUT = 30.0


class PgProcError(RuntimeError):
    pass


def bin_dir() -> Path:
    given = os.environ.get("CHATD_PG_BIN")
    if given:
        if not (Path(given) / "initdb").exists():
            raise PgProcError(f"CHATD_PG_BIN={given} has no initdb. {MISSING}")
        return Path(given)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        on_path = shutil.which("initdb")
        if on_path is None:
            raise PgProcError(MISSING)
        return Path(on_path).parent
    return Path(found[-1]).parent


class PgProc:
    """One PostgreSQL cluster in a temporary folder, served on 127.0.0.1:``port``."""

    def __init__(self, port: int | None = None, durable: bool = False) -> None:
        """``durable``: fsync on (the benchmarks' server); the tests' runs with it off."""
        self.durable = durable
        self.bin = bin_dir()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chatd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None
        self._template = False
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PgProcError(f"running as root and there is no postgres user to run the server as. {MISSING}") from exc
            self.user = "postgres"
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "chatd", "--auth=trust", "-E", "UTF8",
                   "--locale=C", "--no-sync"])

    def _run(self, argv: list[str]) -> None:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, user=self.user, group=self.user,
                           extra_groups=[] if self.user else None)  # fmt: skip
        if r.returncode != 0:
            raise PgProcError(f"{argv[0]} failed ({r.returncode}): {r.stderr[-2000:] or r.stdout[-2000:]}")

    @property
    def url(self) -> str:
        return f"postgresql://chatd@127.0.0.1:{self.port}/postgres"

    def db_url(self, name: str) -> str:
        return f"postgresql://chatd@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log, "ab")
        argv = [
            str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
            "-c", "max_connections=300", "-c", "shared_buffers=128MB",
            "-c", f"fsync={'on' if self.durable else 'off'}", "-c", "synchronous_commit=on",
            "-c", f"full_page_writes={'on' if self.durable else 'off'}", "-c", "log_min_messages=warning",
        ]  # fmt: skip
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.log, pw.pw_uid, pw.pw_gid)
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=log, start_new_session=True,
            user=self.user, group=self.user, extra_groups=[] if self.user else None,
        )  # fmt: skip
        log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PgProcError(f"postgres exited with {self.proc.returncode}: {self.log_tail()}")
            r = subprocess.run(
                [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "chatd", "-d", "postgres"],
                capture_output=True,
                timeout=10,
            )
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise PgProcError(f"postgres not ready within {READY_TIMEOUT} s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (the whole session)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)  # fast shutdown
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def psql(self, sql: str, db: str = "postgres") -> str:
        r = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(self.port), "-U", "chatd",
             "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if r.returncode != 0:
            raise PgProcError(f"psql failed: {r.stderr}")
        return r.stdout

    def create_db(self, migrated: bool = False) -> str:
        """A new empty database, or (``migrated``) one with chatd's schema applied as
        ``chatd migrate`` does, copied from a template migrated once per server; its URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        if migrated:
            if not self._template:
                from chatd.store.postgres import prepare_postgres

                self.psql("CREATE DATABASE chatd_template")
                prepare_postgres(self.db_url("chatd_template"))
                self._template = True
            self.psql(f"CREATE DATABASE {name} TEMPLATE chatd_template")
        else:
            self.psql(f"CREATE DATABASE {name}")
        return self.db_url(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgProc]:
    try:
        pg = PgProc()
        pg.start()
    except PgProcError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
def pg_url(pg_server: PgProc) -> str:
    """A fresh database on the session's server."""
    pg_server.start()  # a test may have killed it
    return pg_server.create_db()
