"""The store: repository Protocols and the invariants every engine keeps
(``base.py``), engine-neutral records (``records.py``), and the engines
(``sqlite/``, ``postgres/``; chosen by :func:`open_store` from the location's form:
a file path or ``sqlite:<path>`` is SQLite, ``postgresql://...`` PostgreSQL)."""

from __future__ import annotations

from .base import Store, StoreUnavailable, Write


def sqlite_path(location: str) -> str:
    """The file of a SQLite location (a path, or ``sqlite:<path>``); ValueError
    for a URL of an engine this server does not have."""
    if "://" in location:
        raise ValueError(
            f"--db {location.split('://', 1)[0]}:// is not supported: give a SQLite file path or a postgresql:// URL"
        )
    return location.removeprefix("sqlite:")


def check_location(location: str) -> None:
    """ValueError for a location no engine takes (config checks ``--db`` with it)."""
    from .postgres import is_postgres

    if is_postgres(location):
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(location)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"--db: not a PostgreSQL URL: {exc}") from exc
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError("--db postgresql:// needs a host: postgresql://user@host:port/database")
        return
    sqlite_path(location)


def open_store(location: str, *, sync: str = "full") -> Store:
    """The store at ``location`` (the engine is chosen by its form). ``sync`` is
    SQLite's; PostgreSQL's durability is the server's ``synchronous_commit``."""
    from .postgres import PostgresStore, is_postgres

    if is_postgres(location):
        return PostgresStore(location)
    from .sqlite import SqliteStore

    return SqliteStore(sqlite_path(location), sync=sync)


def prepare(location: str) -> None:
    """Before ``chatd serve`` forks its processes (``--workers``): create or migrate a
    SQLite file (the embedded store migrates on start); a PostgreSQL store is migrated
    only by :func:`migrate` (``chatd migrate``), and a server refuses a schema that is
    behind when it opens the store."""
    from .postgres import is_postgres

    if is_postgres(location):
        return
    from .sqlite import prepare as prepare_sqlite

    prepare_sqlite(sqlite_path(location))


def migrate(location: str) -> int:
    """Apply the pending migrations to the store (``chatd migrate``); the version it is at."""
    from .postgres import is_postgres, prepare_postgres

    check_location(location)
    if is_postgres(location):
        return prepare_postgres(location)
    import sqlite3

    from .sqlite import prepare as prepare_sqlite

    path = sqlite_path(location)
    prepare_sqlite(path)
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def new_epoch(location: str) -> str:
    """Give the store a new epoch; returns it (``chatd new-epoch``)."""
    from .postgres import is_postgres, new_postgres_epoch

    check_location(location)
    if is_postgres(location):
        return new_postgres_epoch(location)
    from .sqlite import new_epoch as new_sqlite_epoch

    return new_sqlite_epoch(sqlite_path(location))


__all__ = ["Store", "StoreUnavailable", "Write", "check_location", "migrate", "new_epoch", "open_store", "prepare", "sqlite_path"]
