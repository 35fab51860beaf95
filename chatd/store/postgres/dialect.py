"""SQLite's SQL as the repositories write it, translated to PostgreSQL's.

The repositories under ``chatd/store/sqlite/`` are the one copy of chatd's SQL: both
engines run them (docs/design.md, "One set of repositories, two engines"). They keep
to a subset both engines share, and this module translates what differs, once per
statement text (cached):

* ``?`` parameters become ``$1``, ``$2``, ...;
* the column names PostgreSQL reserves (``user``, ``window``) are quoted;
* ``INSERT OR IGNORE`` becomes ``INSERT ... ON CONFLICT DO NOTHING``, and
  ``INSERT OR REPLACE`` an upsert on the table's primary key (the tables it is used
  on have no other unique key, so that is what SQLite replaces on too);
* two-argument ``MAX``/``MIN`` become ``GREATEST``/``LEAST``; ``INTEGER`` becomes
  ``BIGINT`` (times are milliseconds), ``BLOB`` ``BYTEA``;
* an INSERT into a table whose key is an integer row id gets ``RETURNING`` that id,
  which is what ``cursor.lastrowid`` reads;
* in migrations: ``WITHOUT ROWID`` is dropped, a row-id key becomes an identity
  column, and SQLite's ``lower(hex(randomblob(8)))`` is a random hex string.

The catalog (each table's columns, primary key and row-id column) is read from the
schema itself, by applying the migrations to an in-memory SQLite database.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from functools import lru_cache

_TOKEN = re.compile(
    r"""(?P<str>'(?:[^']|'')*')|(?P<qid>"(?:[^"]|"")*")|(?P<comment>--[^\n]*)|(?P<param>\?)"""
    r"""|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<ws>\s+)|(?P<other>.)""",
    re.S,
)
RESERVED = frozenset({"user", "window"})  # PostgreSQL reserves these; chatd's schema uses them as column names
TYPES = {"integer": "BIGINT", "blob": "BYTEA"}


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    key: tuple[str, ...]
    rowid: str | None  # the INTEGER PRIMARY KEY of a rowid table, or None
    types: dict[str, str] = field(default_factory=dict)  # column -> PostgreSQL type (for arrays of it)


@dataclass(frozen=True)
class Statement:
    """One translated statement: its text and, for an INSERT whose RETURNING clause
    was added here, the row-id column it returns (read as ``lastrowid``, not as rows)."""

    sql: str
    rowid: str | None = None
    params: int = 0


@dataclass
class Catalog:
    tables: dict[str, Table] = field(default_factory=dict)

    @classmethod
    def of(cls, migrations: list[str]) -> Catalog:
        conn = sqlite3.connect(":memory:")
        try:
            for script in migrations:
                conn.executescript(script)
            cat = cls()
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                info = conn.execute(f"PRAGMA table_info({name})").fetchall()  # cid, name, type, notnull, dflt, pk
                cols = tuple(r[1] for r in info)
                key = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
                without_rowid = "WITHOUT ROWID" in (
                    conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0].upper()
                )
                rowid = None
                if len(key) == 1 and not without_rowid:
                    col = next(r for r in info if r[1] == key[0])
                    if col[2].upper() == "INTEGER":
                        rowid = key[0]
                types = {r[1]: TYPES.get(r[2].lower(), "TEXT").lower() for r in info}
                cat.tables[name] = Table(cols, key, rowid, types)
            return cat
        finally:
            conn.close()


def _tokens(sql: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "other", m.group()) for m in _TOKEN.finditer(sql)]


def _ident(word: str) -> str:
    return f'"{word.lower()}"' if word.lower() in RESERVED else word


def _close(toks: list[tuple[str, str]], i: int) -> tuple[int, bool]:
    """For the "(" at ``i``: the index of its ")" and whether a comma sits at its top level."""
    depth = 0
    comma = False
    for j in range(i, len(toks)):
        kind, text = toks[j]
        if kind != "other":
            continue
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            if depth == 0:
                return j, comma
        elif text == "," and depth == 1:
            comma = True
    raise ValueError("unbalanced parentheses")


def _next_word(toks: list[tuple[str, str]], i: int) -> int:
    j = i + 1
    while j < len(toks) and toks[j][0] in ("ws", "comment"):
        j += 1
    return j


def translate(sql: str, catalog: Catalog, ddl: bool = False) -> Statement:
    toks = _tokens(sql)
    out: list[str] = []
    n = 0
    mode: str | None = None  # "ignore" | "replace"
    insert_table: str | None = None
    insert_cols: list[str] | None = None
    returning = False
    first = next((t.lower() for k, t in toks if k == "word"), "")
    in_set = False  # inside an upsert's DO UPDATE SET: the table's columns are qualified
    after: dict[int, str] = {}  # token index -> text to put after it
    depth = 0
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        low = text.lower()
        if i - 1 in after:
            out.append(after.pop(i - 1))
        if kind == "param":
            n += 1
            out.append(f"${n}")
        elif kind == "other":
            depth += text == "("
            depth -= text == ")"
            out.append(text)
        elif kind != "word":
            out.append(text)
        elif low == "or" and _prev_word(out) == "insert":
            j = _next_word(toks, i)
            what = toks[j][1].lower()
            if what in ("ignore", "replace"):
                mode = what
                while out and out[-1].isspace():
                    out.pop()
                i = j + 1
                continue
            out.append(text)
        elif low == "into" and first == "insert" and insert_table is None:
            out.append(text)
            j = _next_word(toks, i)
            insert_table = toks[j][1].lower()
            out.extend(t for _, t in toks[i + 1 : j])
            out.append(_ident(toks[j][1]))
            k = _next_word(toks, j)
            if k < len(toks) and toks[k][1] == "(":
                end, _ = _close(toks, k)
                insert_cols = [t.lower() for kk, t in toks[k:end] if kk == "word"]
            i = j + 1
            continue
        elif low == "sum" and not ddl and toks[_next_word(toks, i)][1] == "(":
            # SUM of a BIGINT is NUMERIC in PostgreSQL (a Decimal in Python): keep it an integer
            after[_close(toks, _next_word(toks, i))[0]] = " AS BIGINT)"
            out.append("CAST(SUM")
        elif low == "cross" and _cross_join_on(toks, i):
            i = _next_word(toks, i)  # SQLite's CROSS JOIN ... ON is an inner join; PostgreSQL's takes no ON
            continue
        elif low in ("max", "min") and not ddl:
            j = _next_word(toks, i)
            if j < len(toks) and toks[j][1] == "(" and _close(toks, j)[1]:
                out.append("GREATEST" if low == "max" else "LEAST")
            else:
                out.append(text)
        elif low == "returning" and depth == 0:
            returning = True
            in_set = False
            out.append(text)
        elif low == "without" and ddl:
            j = _next_word(toks, i)
            if toks[j][1].lower() == "rowid":
                i = j + 1
                continue
            out.append(text)
        elif low in TYPES:
            out.append(TYPES[low])
        elif low == "set" and first == "insert" and _prev_word(out) == "update":
            in_set = True
            out.append(text)
        elif low == "where" and in_set and depth == 0:
            out.append(text)  # the upsert's condition: its columns are qualified too
        elif in_set and _is_column(low, insert_table, catalog) and not _assigned(toks, i, out):
            # "SET n = n + 1": PostgreSQL reads a bare n as ambiguous (the row or EXCLUDED's)
            out.append(f"{insert_table}.{_ident(text)}")
        else:
            out.append(_ident(text))
        i += 1
    if len(toks) - 1 in after:
        out.append(after.pop(len(toks) - 1))
    text = "".join(out)
    if ddl:
        text = _ddl_fixups(text)
    table = catalog.tables.get(insert_table or "")
    tail = ""
    if mode == "ignore":
        tail = " ON CONFLICT DO NOTHING"
    elif mode == "replace":
        if table is None:
            raise ValueError(f"INSERT OR REPLACE into unknown table {insert_table}")
        cols = insert_cols or list(table.columns)
        rest = [c for c in cols if c not in table.key]
        keys = ", ".join(_ident(c) for c in table.key)
        if rest:
            sets = ", ".join(f"{_ident(c)} = EXCLUDED.{_ident(c)}" for c in rest)
            tail = f" ON CONFLICT ({keys}) DO UPDATE SET {sets}"
        else:
            tail = f" ON CONFLICT ({keys}) DO NOTHING"
    rowid = None
    if first == "insert" and table is not None and table.rowid and not returning and not ddl:
        rowid = table.rowid
    if tail:
        idx = _top_level_returning(text)
        text = text[:idx].rstrip() + tail + (" " + text[idx:] if idx < len(text) else "")
    if rowid:
        text = text.rstrip().rstrip(";") + f" RETURNING {_ident(rowid)}"
    return Statement(text, rowid, n)


def _cross_join_on(toks: list[tuple[str, str]], i: int) -> bool:
    """``CROSS JOIN table [alias] ON``: whether the CROSS at ``i`` joins with an ON."""
    j = _next_word(toks, i)
    if j >= len(toks) or toks[j][1].lower() != "join":
        return False
    for _ in range(3):  # the table, maybe an alias, then ON or not
        j = _next_word(toks, j)
        if j >= len(toks) or toks[j][0] != "word":
            return False
        if toks[j][1].lower() == "on":
            return True
    return False


def _is_column(word: str, table: str | None, catalog: Catalog) -> bool:
    t = catalog.tables.get(table or "")
    return t is not None and word in t.columns


def _assigned(toks: list[tuple[str, str]], i: int, out: list[str]) -> bool:
    """Whether the word at ``i`` is an assignment's target (after SET or a comma, before "="),
    or already qualified (after a ".")."""
    prev = next((t for t in reversed(out) if not t.isspace()), "")
    if prev == ".":
        return True
    j = _next_word(toks, i)
    return j < len(toks) and toks[j][1] == "=" and prev.lower() in ("set", ",")


def _prev_word(out: list[str]) -> str:
    for t in reversed(out):
        if not t.isspace():
            return t.lower()
    return ""


def _top_level_returning(text: str) -> int:
    depth = 0
    for m in _TOKEN.finditer(text):
        g = m.group()
        if m.lastgroup == "other":
            depth += g == "("
            depth -= g == ")"
        elif m.lastgroup == "word" and g.lower() == "returning" and depth == 0:
            return m.start()
    return len(text)


_ROWID_KEY = re.compile(r"\bBIGINT\s+PRIMARY\s+KEY\b", re.I)


def _ddl_fixups(text: str) -> str:
    text = _ROWID_KEY.sub("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", text)
    return text.replace("lower(hex(randomblob(8)))", "substr(md5(random()::text || clock_timestamp()::text), 1, 16)")


@lru_cache(maxsize=1)
def schema_catalog() -> Catalog:
    from ..sqlite.schema import MIGRATIONS

    return Catalog.of(MIGRATIONS)


@lru_cache(maxsize=4096)
def pg(sql: str) -> Statement:
    """The PostgreSQL form of one repository statement (cached by its text)."""
    return translate(sql, schema_catalog())


_VALUES = re.compile(r"^(INSERT INTO (\w+)\(([^)]*)\)) VALUES \(((?:\$\d+, )*\$\d+)\)(.*)$", re.S)


@lru_cache(maxsize=256)
def pg_rows(sql: str) -> str:
    """``INSERT ... VALUES (?, ...)`` (one ``?`` per column, any ON CONFLICT clause) as
    one statement for many rows: ``INSERT ... SELECT * FROM unnest($1::type[], ...)``,
    each parameter an array of one column's values. For rows whose conflict keys are
    distinct (an upsert may not touch a row twice in one statement)."""
    st = pg(sql)
    text = st.sql
    if st.rowid is not None:  # nobody reads the ids of a run of rows
        text = text.removesuffix(f" RETURNING {st.rowid}")
    m = _VALUES.match(text)
    if m is None:
        raise ValueError(f"not an INSERT of one ? per column: {sql}")
    head, table, cols, params, tail = m.groups()
    columns = [c.strip().strip('"') for c in cols.split(",")]
    if len(columns) != len(params.split(", ")):
        raise ValueError(f"not one ? per column: {sql}")
    types = schema_catalog().tables[table].types
    arrays = ", ".join(f"${i}::{types[c]}[]" for i, c in enumerate(columns, 1))
    return f"{head} SELECT * FROM unnest({arrays}){tail}"


@lru_cache(maxsize=256)
def pg_lookup(table: str, keys: tuple[str, ...], values: tuple[str, ...]) -> str:
    """The rows of ``table`` whose ``keys`` columns match any of a list of key tuples,
    in one statement: each parameter an array of one key column's values; each row
    the key, then the ``values`` columns."""
    types = schema_catalog().tables[table].types
    arrays = ", ".join(f"${i}::{types[k]}[]" for i, k in enumerate(keys, 1))
    names = ", ".join(_ident(k) for k in keys)
    on = " AND ".join(f"t.{_ident(k)} = k.{_ident(k)}" for k in keys)
    cols = ", ".join([*(f"k.{_ident(k)}" for k in keys), *(f"t.{_ident(v)}" for v in values)])
    return f"SELECT {cols} FROM unnest({arrays}) AS k({names}) JOIN {table} t ON {on}"


def statements(script: str) -> list[str]:
    """A script split at its top-level semicolons (none inside strings or comments)."""
    parts: list[str] = []
    cur: list[str] = []
    for kind, text in _tokens(script):
        if kind == "other" and text == ";":
            parts.append("".join(cur))
            cur = []
        elif kind != "comment":
            cur.append(text)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def pg_migration(script: str) -> list[str]:
    """One SQLite migration script as PostgreSQL statements."""
    cat = schema_catalog()
    return [translate(stmt, cat, ddl=True).sql for stmt in statements(script)]
