"""The ``chatd`` command: ``serve``, ``check-config``, ``token``, ``new-epoch``,
``--version``. Settings and their precedence: ``settings.py``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from . import logs, settings
from .app import App
from .auth import Verifier, make_token
from .config import DEV_SECRET, Config
from .redisurl import redact


def chatd_version() -> str:
    try:
        return version("chatd")
    except PackageNotFoundError:  # pragma: no cover - run from a copy of the sources
        return "0+unknown"


def _settings(args: argparse.Namespace) -> dict[str, object]:
    file = settings.load_file(args.config) if args.config else None
    return settings.resolve(vars(args), file)


def _serve(args: argparse.Namespace) -> int:
    try:
        values = _settings(args)
        workers = int(values["workers"])  # type: ignore[call-overload]
        if workers > 1:
            values["reuse_port"] = True
        config = settings.to_config(values)
        if workers > 1 and not config.redis_url:
            raise ValueError("workers > 1 needs redis_url: the processes fan out to each other through Redis")
        if workers > 1 and not config.port:
            raise ValueError("workers > 1 needs a fixed port (the processes share it with SO_REUSEPORT)")
        if workers > 1 and config.admin_port == 0:
            raise ValueError("workers > 1 needs a fixed admin_port (the processes share it with SO_REUSEPORT)")
        logs.setup(str(values["log_level"]), str(values["log_format"]))
        fmt = str(values["log_format"])
        app = None if workers > 1 else App(config)  # builds and checks everything that needs no I/O
    except (ValueError, OSError) as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 2
    if app is None:
        return _supervise(config, workers, fmt)
    _install_uvloop()
    return asyncio.run(_run(app, fmt))


def _why(exc: BaseException, config: Config) -> str:
    """One line saying why the server could not start."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {config.host}:{config.port}: the address is in use"
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
        return f"cannot listen on {config.host}:{config.port}: {exc.strerror}"
    if isinstance(exc, sqlite3.Error | OSError):
        return f"cannot open the store {config.db_path}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _supervise(config: Config, workers: int, fmt: str) -> int:
    """``--workers N``: N processes share the port (SO_REUSEPORT), the store file
    and Redis. This process migrates the store, forks the workers, restarts one
    that dies, and passes SIGTERM/SIGINT on (each worker drains on its own). A
    worker that cannot start (the port in use, the store unreadable) makes the
    supervisor stop them all and exit 1: restarting it would only fail again."""
    import time

    from .store import prepare

    try:
        prepare(config.db_path)
    except (ValueError, OSError, sqlite3.Error) as exc:
        print(f"chatd: cannot start: {_why(exc, config)}", file=sys.stderr)
        return 1
    log = logging.getLogger("chatd.supervisor")
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1  # a crash: restarted
            try:
                _install_uvloop()
                code = asyncio.run(_run(App(config), fmt, worker=index))
            finally:
                os._exit(code)
        children[pid] = index

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(workers):
        spawn(index)
    failed_start = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, -1)
        if os.waitstatus_to_exitcode(status) == START_FAILED and not stopping:
            failed_start = True  # it said why; the others would say the same
            forward(signal.SIGTERM, None)
        elif not stopping and index >= 0:
            log.warning("worker %d (pid %d) exited with status %d; restarting it", index, pid, status)
            time.sleep(0.5)
            spawn(index)
    return 1 if failed_start else 0


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass


def _tune_gc() -> None:
    """Keep full (gen2) collections out of the message path.

    Measured at 5,000 connections: each full collection scans every live
    connection object and stalls the loop 200-540 ms, collecting nothing (the
    p99 of a 20,000 deliveries/s fan-out went from ~20 ms to 300-530 ms when one
    landed in the window). Young collections stay as frequent as Python's
    default (cheap, ~1 ms); a full one now needs 1,000 gen1 collections
    instead of 10. Objects alive at start-up are frozen out of collection.
    """
    gc.freeze()
    gc.set_threshold(700, 50, 1000)


START_FAILED = 3  # a worker's exit status when it could not start


async def _run(app: App, fmt: str, worker: int | None = None) -> int:
    _tune_gc()
    config = app.config
    try:
        await app.start()
    except Exception as exc:  # one line, no traceback: nothing was left running
        print(f"chatd: cannot start: {_why(exc, config)}", file=sys.stderr, flush=True)
        return START_FAILED if worker is not None else 1
    who = f"worker {worker} (pid {os.getpid()}) " if worker is not None else ""
    bus = f"bus {redact(config.redis_url)}" if config.redis_url else "in-memory bus"
    logs.banner(
        fmt,
        f"chatd {chatd_version()} {who}serving ws://{config.host}:{app.port}/  (healthz, metrics on the same port; {bus})",
        url=f"ws://{config.host}:{app.port}/",
        version=chatd_version(),
        worker=worker,
        pid=os.getpid(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await app.stop()
    return 0


def _token(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get("CHATD_SECRET")
    try:
        print(
            make_token(
                args.user,
                args.type,
                name=args.name,
                badges=args.badge,
                roles=args.role,
                ttl=args.ttl,
                secret=secret or DEV_SECRET,
                scopes=args.scope,
            )
        )
    except ValueError as exc:
        print(f"chatd token: {exc}", file=sys.stderr)
        return 2
    return 0


def _store_command(name: str, fn: Callable[[], str]) -> int:
    """Run a store command (``fn`` returns what it prints); what the store or its
    location refuses is one line on stderr and exit 2."""
    import sqlite3

    import asyncpg

    from .store import StoreUnavailable

    try:
        print(fn())
    except (ValueError, OSError, sqlite3.Error, StoreUnavailable, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"chatd {name}: {exc}", file=sys.stderr)
        return 2
    return 0


def _new_epoch(args: argparse.Namespace) -> int:
    from .store import new_epoch

    return _store_command("new-epoch", lambda: new_epoch(args.db))


def _migrate(args: argparse.Namespace) -> int:
    from .store import migrate

    def run() -> str:
        return f"chatd migrate: {args.db.split('@')[-1]} is at schema version {migrate(args.db)}"

    return _store_command("migrate", run)


def _copy_store(args: argparse.Namespace) -> int:
    from .store.copy import run_copy

    def run() -> str:
        copied = run_copy(args.source, args.target)
        busy = ", ".join(f"{t} {n:,}" for t, n in sorted(copied.tables.items()) if n)
        return f"chatd copy-store: {copied.rows:,} rows copied ({busy})"

    return _store_command("copy-store", run)


def _check_config(args: argparse.Namespace) -> int:
    try:
        values = settings.resolve({}, settings.load_file(args.file))
        config = settings.to_config(values)
        Verifier.from_files(config.signing_secret, config.token_public_key, config.token_jwks, config.token_algorithms)
    except ValueError as exc:
        print(f"chatd check-config: {exc}", file=sys.stderr)
        return 2
    print(f"chatd check-config: {args.file} is valid")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatd", description="chatd chat and presence server")
    parser.add_argument("--version", action="version", version=f"chatd {chatd_version()}")
    sub = parser.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Every setting comes from, lowest first: its default, the --config "
        "file, the environment (the variable in brackets), the flag.",
    )
    s.add_argument("--config", metavar="FILE", help="a TOML file of settings (keys as the flags, with _)")
    settings.add_flags(s)
    s.set_defaults(fn=_serve)

    c = sub.add_parser("check-config", help="check a TOML settings file (and the environment) and exit")
    c.add_argument("file")
    c.set_defaults(fn=_check_config)

    t = sub.add_parser("token", help="print a signed token (development secret unless --secret)")
    t.add_argument("--user", required=True)
    t.add_argument("--type", required=True, choices=("fan", "deposit", "owner", "staff", "bot"))
    t.add_argument("--name")
    t.add_argument("--badge", action="append", default=[])
    t.add_argument("--role", action="append", default=[])
    t.add_argument("--ttl", type=int, default=86400, help="seconds until expiry")
    t.add_argument(
        "--scope", action="append", default=[], choices=("admin",), help="admin: a backend's token (admin ops)"
    )
    t.add_argument("--secret")
    t.set_defaults(fn=_token)

    e = sub.add_parser(
        "new-epoch",
        help="give a store a new epoch after restoring it from a backup (clients then start over)",
    )
    e.add_argument("--db", required=True, help="the SQLite file or postgresql:// URL (not serving)")
    e.set_defaults(fn=_new_epoch)

    m = sub.add_parser(
        "migrate",
        help="apply the store's pending schema migrations and exit (run before deploying a new chatd on "
        "PostgreSQL; a SQLite store also migrates when the server starts)",
    )
    m.add_argument("--db", required=True, help="the SQLite file or postgresql:// URL")
    m.set_defaults(fn=_migrate)

    cp = sub.add_parser(
        "copy-store",
        help="copy a SQLite store into a migrated, empty PostgreSQL database, every seq, position, "
        "ledger entry and cursor as it is (stop the servers writing to the file first)",
    )
    cp.add_argument("--from", dest="source", required=True, help="the SQLite file")
    cp.add_argument("--to", dest="target", required=True, help="the postgresql:// URL (run chatd migrate on it first)")
    cp.set_defaults(fn=_copy_store)

    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
