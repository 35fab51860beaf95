"""The SQLite-to-PostgreSQL translation of the repositories' SQL (pure logic: the
statements' behaviour on a real server is the contract suite's)."""

from __future__ import annotations

import pytest

from chatd.store.postgres.dialect import pg, pg_lookup, pg_migration, pg_rows, schema_catalog, statements
from chatd.store.sqlite.schema import MIGRATIONS


def test_parameters_are_numbered_and_question_marks_in_strings_stay() -> None:
    st = pg("SELECT pos FROM messages WHERE conv = ? AND sender LIKE 'a?%' AND seq > ?")
    assert st.sql == "SELECT pos FROM messages WHERE conv = $1 AND sender LIKE 'a?%' AND seq > $2"
    assert st.params == 2


def test_reserved_column_names_are_quoted_bare_and_qualified() -> None:
    st = pg("SELECT m.user, window FROM quotas m WHERE user = ? -- user here stays\n")
    assert st.sql.startswith('SELECT m."user", "window" FROM quotas m WHERE "user" = $1')


def test_insert_or_ignore_and_or_replace() -> None:
    assert pg("INSERT OR IGNORE INTO hook_cursors VALUES (?, 'messages', ?)").sql == (
        "INSERT INTO hook_cursors VALUES ($1, 'messages', $2) ON CONFLICT DO NOTHING"
    )
    assert pg("INSERT OR REPLACE INTO live_roles VALUES (?, ?, ?)").sql == (
        'INSERT INTO live_roles VALUES ($1, $2, $3) ON CONFLICT (session, "user") DO UPDATE SET role = EXCLUDED.role'
    )


def test_or_replace_into_an_unknown_table_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown table"):
        pg("INSERT OR REPLACE INTO no_such_table VALUES (?)")


def test_upsert_columns_are_qualified_outside_assignment_targets() -> None:
    st = pg("INSERT INTO quotas VALUES (?, ?, ?, 1) ON CONFLICT(user, action, window) DO UPDATE SET n = n + 1")
    assert st.sql.endswith("DO UPDATE SET n = quotas.n + 1")
    st = pg("INSERT INTO revocations VALUES (?, ?, 0) ON CONFLICT(user) DO UPDATE SET before = MAX(before, excluded.before) RETURNING before")
    assert "SET before = GREATEST(revocations.before, excluded.before) RETURNING before" in st.sql


def test_scalar_max_only_and_sum_stays_an_integer() -> None:
    assert pg("SELECT MAX(pos) FROM messages").sql == "SELECT MAX(pos) FROM messages"
    assert pg("UPDATE members SET read_seq = MAX(read_seq, ?)").sql == "UPDATE members SET read_seq = GREATEST(read_seq, $1)"
    assert pg("SELECT COALESCE(SUM(amount), 0) FROM balances").sql == (
        "SELECT COALESCE(CAST(SUM(amount) AS BIGINT), 0) FROM balances"
    )


def test_cross_join_with_on_becomes_an_inner_join_and_without_stays() -> None:
    st = pg("SELECT 1 FROM a CROSS JOIN service_state s ON s.conv = a.conv CROSS JOIN b WHERE 1")
    assert st.sql == "SELECT 1 FROM a JOIN service_state s ON s.conv = a.conv CROSS JOIN b WHERE 1"


def test_insert_into_a_rowid_table_returns_the_id_for_lastrowid() -> None:
    st = pg("INSERT INTO events(key, kind, user, conv, ts, data) VALUES (?, ?, ?, ?, ?, ?)")
    assert st.rowid == "id" and st.sql.endswith(" RETURNING id")
    assert pg("INSERT INTO members(conv, user, role) VALUES (?, ?, 'member')").rowid is None  # WITHOUT ROWID
    assert pg("INSERT INTO events(key) VALUES (?) RETURNING key").rowid is None  # asked for its own


def test_the_catalog_reads_keys_from_the_schema() -> None:
    cat = schema_catalog()
    assert cat.tables["members"].key == ("conv", "user") and cat.tables["members"].rowid is None
    assert cat.tables["messages"].rowid == "pos"


def test_every_migration_translates_without_sqlite_only_syntax() -> None:
    for script in MIGRATIONS:
        for stmt in pg_migration(script):
            up = stmt.upper()
            assert "WITHOUT ROWID" not in up and "BLOB" not in up and "RANDOMBLOB" not in up
            assert " OR IGNORE" not in up and " OR REPLACE" not in up


def test_statements_split_at_top_level_semicolons_only() -> None:
    assert statements("INSERT INTO meta VALUES ('a;b', 1); -- c; d\nSELECT 2;") == [
        "INSERT INTO meta VALUES ('a;b', 1)",
        "SELECT 2",
    ]


def test_an_insert_of_many_rows_takes_one_array_per_column() -> None:
    sql = pg_rows(
        "INSERT INTO balances(user, currency, amount) VALUES (?, ?, ?)"
        " ON CONFLICT(user, currency) DO UPDATE SET amount = amount + excluded.amount"
    )
    assert sql == (
        'INSERT INTO balances("user", currency, amount) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])'
        ' ON CONFLICT("user", currency) DO UPDATE SET amount = balances.amount + excluded.amount'
    )
    # a row-id table: no RETURNING (nobody reads a run's ids); BLOB columns are bytea arrays
    sql = pg_rows("INSERT INTO messages(pos, conv, seq, sender, cid, ts, kind, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
    assert "RETURNING" not in sql and sql.endswith("$7::bigint[], $8::bytea[])")


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE balances SET amount = ? WHERE user = ?",  # not an INSERT
        "INSERT INTO daily(user, rule, day, n) VALUES (?, ?, ?, 1)",  # a constant among the values
        "INSERT INTO balances VALUES (?, ?, ?)",  # no column list
        "INSERT INTO balances(user, currency, amount) SELECT ?, ?, ?",
    ],
)
def test_an_insert_of_many_rows_refuses_what_it_cannot_turn_into_arrays(sql: str) -> None:
    with pytest.raises(ValueError):
        pg_rows(sql)


def test_a_lookup_of_many_keys_joins_the_arrays_of_key_columns() -> None:
    assert pg_lookup("daily", ("user", "rule", "day"), ("n",)) == (
        'SELECT k."user", k.rule, k.day, t.n FROM unnest($1::text[], $2::text[], $3::text[]) AS k("user", rule, day)'
        ' JOIN daily t ON t."user" = k."user" AND t.rule = k.rule AND t.day = k.day'
    )
    with pytest.raises(KeyError):
        pg_lookup("daily", ("nosuchcolumn",), ("n",))
