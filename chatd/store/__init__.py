"""The store: repository Protocols and the invariants every engine keeps
(``base.py``), engine-neutral records (``records.py``), and the engines
(``sqlite/``; chosen by :func:`open_store`)."""

from __future__ import annotations

from .base import Store, StoreUnavailable, Write


def open_store(location: str, *, sync: str = "full") -> Store:
    """The store at ``location``: a SQLite file path (or ``sqlite:<path>``)."""
    from .sqlite import SqliteStore

    path = location.removeprefix("sqlite:")
    return SqliteStore(path, sync=sync)


__all__ = ["Store", "StoreUnavailable", "Write", "open_store"]
