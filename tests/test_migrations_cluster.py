"""ON CLUSTER rendering of the ClickHouse migrations (QUANT_CLICKHOUSE_CLUSTER)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from quant_core.migrations import (
    REPLICA_NAME,
    REPLICA_PATH,
    Migration,
    MigrationError,
    render,
    split_statements,
)
from quant_resources.migrations import ClickHouseLedger, load

MIGRATIONS = load("clickhouse")
CLUSTER = "quant_prod"
ZK = f"'{REPLICA_PATH}', '{REPLICA_NAME}'"
ENGINE = re.compile(r"ENGINE\s*=\s*(\w+)(?:\s*\(([^()]*)\))?")
CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)")
ALTER = re.compile(r"ALTER TABLE (\w+) ")

# What the real tables become on a cluster (the files say ReplacingMergeTree(version) for
# versioned tables, ReplacingMergeTree for dedup-only ones, MergeTree for telemetry).
EXPECTED_ENGINES = {
    "bars_1m": f"ReplicatedReplacingMergeTree({ZK}, version)",
    "trades": f"ReplicatedReplacingMergeTree({ZK})",
    "quotes": f"ReplicatedReplacingMergeTree({ZK})",
    "options_quotes": f"ReplicatedReplacingMergeTree({ZK}, version)",
    "fills": f"ReplicatedReplacingMergeTree({ZK})",
    "actions": f"ReplicatedReplacingMergeTree({ZK})",
    "telemetry": f"ReplicatedMergeTree({ZK})",
    "bars_1d": f"ReplicatedReplacingMergeTree({ZK}, version)",
    "option_bars_1m": f"ReplicatedReplacingMergeTree({ZK}, version)",
    "slice_publications": f"ReplicatedReplacingMergeTree({ZK}, updated_at)",
}


def _format_with_clickhouse(statements: list[str]) -> list[str]:
    """Each statement through ClickHouse's own parser (formatQuery in chDB), in a subprocess
    so this test never shares chDB's one-engine-per-process with other tests."""
    code = r"""
import json, sys, chdb
out = []
for statement in json.load(sys.stdin):
    literal = "'" + statement.replace("\\", "\\\\").replace("'", "\\'") + "'"
    result = chdb.query(f"SELECT formatQuery({literal}) AS f", "JSONEachRow")
    out.append(json.loads(result.data())["f"])
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(statements),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: m.key)
def test_each_real_migration_renders_on_cluster_with_replicated_engines(
    migration: Migration,
) -> None:
    rendered = render(migration.sql, CLUSTER)
    original = split_statements(migration.sql)
    statements = split_statements(rendered)
    assert len(statements) == len(original) > 0
    for before, after in zip(original, statements, strict=True):
        altered = ALTER.match(before)
        if altered:  # ON CLUSTER after the table name, the rest verbatim
            name = altered[1]
            assert after == before.replace(
                f"ALTER TABLE {name} ", f"ALTER TABLE {name} ON CLUSTER {CLUSTER} ", 1
            )
            continue
        table = CREATE.match(before)
        assert table, f"{migration.filename}: expected CREATE TABLE IF NOT EXISTS, got {before!r}"
        name = table[1]
        # ON CLUSTER right after the table name (before the columns or `AS other`).
        head = f"CREATE TABLE IF NOT EXISTS {name} ON CLUSTER {CLUSTER}"
        assert after.startswith((f"{head}\n", f"{head} AS "))
        assert after.count("ON CLUSTER") == 1
        engine_before = ENGINE.search(before)
        engine_after = ENGINE.search(after)
        assert engine_before and engine_after
        family, args = engine_before[1], engine_before[2]
        assert engine_after[1] == f"Replicated{family}"
        expected_args = f"{ZK}, {args.strip()}" if args and args.strip() else ZK
        assert engine_after[0] == f"ENGINE = Replicated{family}({expected_args})"
        if name in EXPECTED_ENGINES:
            assert engine_after[0] == f"ENGINE = {EXPECTED_ENGINES[name]}"
        # Everything else (columns, PARTITION BY, ORDER BY, TTL, SETTINGS) is kept verbatim.
        undone = after.replace(f" ON CLUSTER {CLUSTER}", "", 1).replace(
            engine_after[0], engine_before[0], 1
        )
        assert undone == before
        for clause in ("SETTINGS", "ORDER BY", "PARTITION BY", "TTL"):
            assert (clause in before) == (clause in after)


def test_every_known_table_is_covered_by_a_migration() -> None:
    statements = [s for m in MIGRATIONS for s in split_statements(m.sql)]
    created = {CREATE.match(s)[1] for s in statements if not ALTER.match(s)}
    assert set(EXPECTED_ENGINES) <= created


def test_rendered_statements_parse_in_clickhouse() -> None:
    rendered = [s for m in MIGRATIONS for s in split_statements(render(m.sql, CLUSTER))]
    formatted = _format_with_clickhouse(rendered)
    assert len(formatted) == len(rendered)
    for text in formatted:
        head = text.splitlines()[0]
        if head.startswith("ALTER TABLE"):
            assert re.match(rf"ALTER TABLE \w+ ON CLUSTER {CLUSTER}", head), head
            continue
        assert re.fullmatch(rf"CREATE TABLE IF NOT EXISTS \w+ ON CLUSTER {CLUSTER}( AS \w+)?", head)
        assert "ENGINE = Replicated" in text
        assert "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'" in text
    bars = next(t for t in formatted if "EXISTS bars_1m ON" in t)
    assert f"ReplicatedReplacingMergeTree({ZK}, version)" in bars
    assert "SETTINGS non_replicated_deduplication_window = 1000" in bars
    derived = next(t for t in formatted if "EXISTS bars_1d ON" in t)
    assert derived.startswith(f"CREATE TABLE IF NOT EXISTS bars_1d ON CLUSTER {CLUSTER} AS bars_1m")


@pytest.mark.parametrize("cluster", [None, ""])
def test_without_a_cluster_the_text_is_unchanged(cluster: str | None) -> None:
    for migration in MIGRATIONS:
        assert render(migration.sql, cluster) == migration.sql


def test_render_leaves_comments_and_strings_alone_and_is_idempotent() -> None:
    sql = (
        "-- CREATE TABLE old ENGINE = MergeTree\n"
        "/* ALTER TABLE x */ CREATE TABLE IF NOT EXISTS db.t\n"
        "(a String DEFAULT 'ENGINE = MergeTree', b UInt64)\n"
        "ENGINE = MergeTree() ORDER BY a;\n"
        "ALTER TABLE t ADD COLUMN c UInt8;\n"
        "CREATE DATABASE IF NOT EXISTS quant;\n"
        "DROP TABLE IF EXISTS `odd name`;\n"
        "TRUNCATE TABLE t;\n"
        "CREATE TABLE s ON CLUSTER other (a UInt8)\n"
        "ENGINE = ReplicatedMergeTree('/custom/{shard}', '{replica}') ORDER BY a;\n"
        "CREATE TABLE agg (k UInt8, v UInt64) ENGINE = SummingMergeTree((v)) ORDER BY k;\n"
        "INSERT INTO t SELECT 1"
    )
    out = render(sql, "c1")
    assert out.startswith("-- CREATE TABLE old ENGINE = MergeTree\n/* ALTER TABLE x */ ")
    assert "CREATE TABLE IF NOT EXISTS db.t ON CLUSTER c1\n" in out
    assert "DEFAULT 'ENGINE = MergeTree'" in out
    assert f"ENGINE = ReplicatedMergeTree({ZK}) ORDER BY a;" in out
    assert "ALTER TABLE t ON CLUSTER c1 ADD COLUMN" in out
    assert "CREATE DATABASE IF NOT EXISTS quant ON CLUSTER c1;" in out
    assert "DROP TABLE IF EXISTS `odd name` ON CLUSTER c1;" in out
    assert "TRUNCATE TABLE t ON CLUSTER c1;" in out
    # Already clustered and already replicated: kept as written.
    assert "CREATE TABLE s ON CLUSTER other (a UInt8)" in out
    assert "ReplicatedMergeTree('/custom/{shard}', '{replica}')" in out
    # Nested brackets in the engine arguments: not guessed at, kept as written.
    assert "ENGINE = SummingMergeTree((v))" in out
    assert out.endswith("INSERT INTO t SELECT 1")
    assert render(out, "c1") == out


def test_cluster_names_are_validated_and_quoted() -> None:
    with pytest.raises(MigrationError, match="QUANT_CLICKHOUSE_CLUSTER"):
        render("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a", "x; DROP TABLE y")
    out = render("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a", "prod-eu")
    assert out.startswith("CREATE TABLE t ON CLUSTER `prod-eu` (a UInt8)")


class FakeWarehouse:
    database = "quant"

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any] | None]] = []

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.commands.append((sql, params))

    def query_rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        return []


def _apply_all(monkeypatch: pytest.MonkeyPatch, cluster: str | None) -> FakeWarehouse:
    if cluster is None:
        monkeypatch.delenv("QUANT_CLICKHOUSE_CLUSTER", raising=False)
    else:
        monkeypatch.setenv("QUANT_CLICKHOUSE_CLUSTER", cluster)
    warehouse = FakeWarehouse()
    ledger = ClickHouseLedger(warehouse)
    for migration in MIGRATIONS:
        ledger.apply(migration)
    return warehouse


def test_ledger_renders_for_the_configured_cluster_and_records_file_checksums(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = _apply_all(monkeypatch, None)
    clustered = _apply_all(monkeypatch, CLUSTER)

    # Without a cluster: the statements exactly as split from the files.
    ddl = [sql for sql, params in plain.commands if params is None]
    assert not any("ON CLUSTER" in sql or "Replicated" in sql for sql in ddl)
    expected = [s for m in MIGRATIONS for s in m.statements]
    assert ddl[1:] == expected

    # With a cluster: database on every node, then the ledger table, then each statement.
    ddl = [sql for sql, params in clustered.commands if params is None]
    assert ddl[0] == f"CREATE DATABASE IF NOT EXISTS quant ON CLUSTER {CLUSTER}"
    assert ddl[1].startswith(f"CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER {CLUSTER}")
    assert ddl[1].endswith(f"ENGINE = ReplicatedReplacingMergeTree({ZK}) ORDER BY id")
    assert ddl[2:] == [render(s, CLUSTER) for s in expected]

    # The ledger rows are identical: the checksum is the file's, whatever the cluster.
    rows = [params for _, params in plain.commands if params is not None]
    clustered_rows = [params for _, params in clustered.commands if params is not None]
    strip = [{k: v for k, v in r.items() if k != "ms"} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k != "ms"} for r in clustered_rows]
    assert [r["c"] for r in rows] == [m.checksum for m in MIGRATIONS]
    for migration in MIGRATIONS:
        assert (
            migration.checksum
            != Migration(
                migration.key, migration.number, migration.filename, render(migration.sql, CLUSTER)
            ).checksum
        )
