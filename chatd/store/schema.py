"""Versioned migrations. ``PRAGMA user_version`` holds the applied version."""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: core chat
    """
    CREATE TABLE conversations(
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,                 -- 'dm' | 'circle'
        name TEXT NOT NULL DEFAULT '',
        category TEXT,
        certified INTEGER NOT NULL DEFAULT 0,
        description TEXT NOT NULL DEFAULT '',
        announcement TEXT NOT NULL DEFAULT '',
        owner TEXT,
        created_ts INTEGER NOT NULL,
        last_seq INTEGER NOT NULL DEFAULT 0,
        last_pos INTEGER NOT NULL DEFAULT 0,
        member_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX conversations_list ON conversations(kind, category, id);
    CREATE TABLE members(
        conv TEXT NOT NULL,
        user TEXT NOT NULL,
        role TEXT NOT NULL,                 -- 'owner' | 'admin' | 'member'
        read_seq INTEGER NOT NULL DEFAULT 0,
        muted_until INTEGER NOT NULL DEFAULT 0,
        joined_seq INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY(conv, user)
    ) WITHOUT ROWID;
    CREATE INDEX members_user ON members(user, conv);
    -- A rowid table keyed by the global position: inserts append at the end
    -- (measured faster than clustering by (conv, seq), whose inserts land
    -- mid-tree, one place per conversation).
    CREATE TABLE messages(
        pos INTEGER PRIMARY KEY,            -- global commit position (counters 'pos')
        conv TEXT NOT NULL,
        seq INTEGER NOT NULL,               -- gapless per conversation
        sender TEXT NOT NULL,
        cid TEXT,                           -- sender's idempotency key
        ts INTEGER NOT NULL,
        kind INTEGER NOT NULL,              -- 0 text, 1 system
        data BLOB NOT NULL,                 -- msgpack: author, text, mentions, event
        recalled INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX messages_seq ON messages(conv, seq);
    CREATE INDEX messages_pos ON messages(conv, pos);
    CREATE UNIQUE INDEX messages_cid ON messages(sender, cid) WHERE cid IS NOT NULL;
    CREATE TABLE blocks(
        blocker TEXT NOT NULL,
        blocked TEXT NOT NULL,
        PRIMARY KEY(blocker, blocked)
    ) WITHOUT ROWID;
    CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO counters VALUES ('circle', 0), ('pos', 0);
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction. Returns the version.

    Several processes may start on one file at once (``--workers``): one that
    loses the race finds the migration applied and moves on."""
    while True:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= len(MIGRATIONS):
            return len(MIGRATIONS)
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[version]}\nPRAGMA user_version = {version + 1};\nCOMMIT;")
        except sqlite3.OperationalError:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if conn.execute("PRAGMA user_version").fetchone()[0] > version:
                continue  # another process applied it meanwhile
            raise
