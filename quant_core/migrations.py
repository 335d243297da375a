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
