"""Versioned SQL migrations: naming, checksums, statement splitting and the apply plan.

A migration file is ``NNNN_name.sql``; its partition key in Dagster is the file stem. Applying
migration N means applying every migration up to N that is not yet in the ledger, in order.
An applied migration whose text changed since is a hard error: history is never rewritten.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

_NAME = re.compile(r"^(?P<number>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration set that must not be applied; the message names the file and the cause."""


@dataclass(frozen=True)
class Migration:
    key: str  # file stem, e.g. "0001_bars_1m": the Dagster partition key
    number: int
    filename: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def statements(self) -> list[str]:
        return split_statements(self.sql)


def parse(filename: str, sql: str) -> Migration:
    match = _NAME.match(filename)
    if match is None:
        raise MigrationError(f"migration file {filename!r} is not named NNNN_lower_snake.sql")
    return Migration(filename[:-4], int(match["number"]), filename, sql)


def ordered(migrations: Sequence[Migration]) -> list[Migration]:
    result = sorted(migrations, key=lambda m: m.number)
    for before, after in pairwise(result):
        if before.number == after.number:
            raise MigrationError(
                f"migrations {before.filename!r} and {after.filename!r} share a number"
            )
    return result


def plan(
    migrations: Sequence[Migration], target: str, applied: Mapping[str, str]
) -> list[Migration]:
    """Migrations to apply (in order) so that everything up to ``target`` is applied.

    ``applied`` maps ledger keys to the checksums recorded when they were applied.
    """
    chain = ordered(migrations)
    keys = [m.key for m in chain]
    if target not in keys:
        raise MigrationError(f"migration {target!r} does not exist (known: {', '.join(keys)})")
    for migration in chain:
        recorded = applied.get(migration.key)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"migration {migration.filename!r} was changed after it was applied: "
                f"ledger checksum {recorded}, file checksum {migration.checksum}. "
                "Write a new migration instead of editing an applied one."
            )
    unknown = sorted(set(applied) - set(keys))
    if unknown:
        raise MigrationError(f"the ledger lists migrations with no file: {', '.join(unknown)}")
    upto = chain[: keys.index(target) + 1]
    return [m for m in upto if m.key not in applied]


def split_statements(sql: str) -> list[str]:
    """Split on ``;`` outside quotes and comments (ClickHouse's HTTP API runs one per request)."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    quote: str | None = None
    while i < n:
        ch = sql[i]
        if quote:
            current.append(ch)
            if ch == "\\" and i + 1 < n:
                current.append(sql[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
            current.append(ch)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            continue
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        elif ch == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


# -- ON CLUSTER rendering ----------------------------------------------------------------------
#
# Migration files are written for one server. On a ClickHouse cluster the same files are
# rendered at apply time: DDL gets ``ON CLUSTER <name>`` right after the object name, and every
# *MergeTree engine becomes its Replicated form, keyed by the server macros {shard}/{replica}.
# The ledger keeps the checksum of the file text, so choosing a cluster never looks like an
# edited migration.

REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
REPLICA_NAME = "{replica}"

_IDENT = r"(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)"
_OBJECT = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"
# DDL whose object name may be followed by ON CLUSTER (ClickHouse grammar: `... name [ON
# CLUSTER c] ...`). RENAME, EXCHANGE and INSERT are not rewritten.
_DDL = re.compile(
    r"(?P<head>\b(?:"
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TABLE|DATABASE|DICTIONARY|(?:MATERIALIZED\s+)?VIEW)"
    r"(?:\s+IF\s+NOT\s+EXISTS)?"
    r"|ALTER\s+TABLE"
    r"|DROP\s+(?:TABLE|DATABASE|DICTIONARY|VIEW)(?:\s+IF\s+EXISTS)?"
    r"|TRUNCATE(?:\s+TABLE)?(?:\s+IF\s+EXISTS)?"
    r"|OPTIMIZE\s+TABLE"
    # The name is taken whole (no backtracking into it) and not already followed by ON CLUSTER.
    # ...nor a keyword of the head (`IF [NOT] EXISTS`, TRUNCATE's optional `TABLE`).
    rf")\s+)(?!(?:IF|TABLE)\b)(?P<name>{_OBJECT})(?![\w`])(?!\s*\.)(?!\s+ON\s+CLUSTER\b)",
    re.IGNORECASE,
)
_ENGINE = re.compile(
    r"(?P<head>\bENGINE\s*=\s*)"
    r"(?P<family>(?:Replacing|Summing|Aggregating|Collapsing|VersionedCollapsing|Graphite)?"
    r"MergeTree)\b"
    # Arguments with nested brackets or quotes are not rewritten (no match at all).
    r"(?P<args>\s*\([^()]*\))?(?!\s*\()",
    re.IGNORECASE,
)


def render(sql: str, cluster: str | None) -> str:
    """``sql`` as it runs on ``cluster``: unchanged when ``cluster`` is None or empty.

    With a cluster, ``CREATE TABLE|DATABASE|VIEW|DICTIONARY``, ``ALTER TABLE``, ``DROP``,
    ``TRUNCATE`` and ``OPTIMIZE`` get ``ON CLUSTER <cluster>`` after the object name (also in
    ``CREATE TABLE x AS y``), and ``ENGINE = [Replacing|Summing|...]MergeTree[(args)]`` becomes
    ``Replicated...MergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}'[,
    args])``. Comments and quoted text are left alone; engines that are already Replicated (or
    not MergeTree) and statements that already say ON CLUSTER are kept as written.
    """
    if not cluster:
        return sql
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", cluster):
        raise MigrationError(
            f"QUANT_CLICKHOUSE_CLUSTER={cluster!r} is not a valid cluster name "
            "(letters, digits, '_' and '-', starting with a letter or '_')"
        )
    on_cluster = f"ON CLUSTER {_quote_cluster(cluster)}"
    rendered: list[str] = []
    for code, text in _segments(sql):
        if code:
            text = _DDL.sub(lambda m: f"{m['head']}{m['name']} {on_cluster}", text)
            text = _ENGINE.sub(_replicated, text)
        rendered.append(text)
    return "".join(rendered)


def _quote_cluster(cluster: str) -> str:
    return cluster if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cluster) else f"`{cluster}`"


def _replicated(match: re.Match[str]) -> str:
    args = (match["args"] or "").strip()
    inner = args[1:-1].strip() if args else ""
    replica_args = [f"'{REPLICA_PATH}'", f"'{REPLICA_NAME}'"]
    if inner:
        replica_args.append(inner)
    return f"{match['head']}Replicated{match['family']}({', '.join(replica_args)})"


def _segments(sql: str) -> list[tuple[bool, str]]:
    """``sql`` cut into (is_code, text) pieces; quoted text and comments are not code."""
    pieces: list[tuple[bool, str]] = []
    start = i = 0
    n = len(sql)

    def cut(end: int, code: bool) -> None:
        if end > start:
            pieces.append((code, sql[start:end]))

    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            end = i + 1
            while end < n and sql[end] != ch:
                end += 2 if sql[end] == "\\" else 1
            end = min(end + 1, n)
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            end = n if newline < 0 else newline
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            end = n if close < 0 else close + 2
        else:
            i += 1
            continue
        cut(i, True)
        start = i
        # Backquoted identifiers stay with the code around them (the DDL pattern matches them).
        cut(end, ch == "`")
        start = i = end
    cut(n, True)
    return _merge_code(pieces)


def _merge_code(pieces: list[tuple[bool, str]]) -> list[tuple[bool, str]]:
    merged: list[tuple[bool, str]] = []
    for code, text in pieces:
        if merged and code and merged[-1][0]:
            merged[-1] = (True, merged[-1][1] + text)
        else:
            merged.append((code, text))
    return merged
