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


def open_store(location: str, *, sync: str = "full") -> Store:
    """The store at ``location`` (the engine is chosen by its form). ``sync`` is
    SQLite's; PostgreSQL's durability is the server's ``synchronous_commit``."""
    from .postgres import PostgresStore, is_postgres

    if is_postgres(location):
        return PostgresStore(location)
    from .sqlite import SqliteStore

    return SqliteStore(sqlite_path(location), sync=sync)


def prepare(location: str) -> None:
    """Create or migrate the store before processes fork (``--workers``)."""
    from .postgres import is_postgres, prepare_postgres

    if is_postgres(location):
        prepare_postgres(location)
        return
    from .sqlite import prepare as prepare_sqlite

    prepare_sqlite(sqlite_path(location))


def new_epoch(location: str) -> str:
    """Give the store a new epoch; returns it (``chatd new-epoch``)."""
    from .sqlite import new_epoch as new_sqlite_epoch

    return new_sqlite_epoch(sqlite_path(location))


__all__ = ["Store", "StoreUnavailable", "Write", "new_epoch", "open_store", "prepare", "sqlite_path"]
