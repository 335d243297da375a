"""The warehouse: ClickHouse SQL through clickhouse-connect, on a server or on chDB.

``CLICKHOUSE_URL`` selects the engine: ``http(s)://user:password@host:port/db`` for a ClickHouse
server or the project's own endpoint (``quant warehouse serve``), ``chdb:///dir?database=db``
for chDB in this process. The same SQL and the same client code run on both.

Values are always bound server-side (``{name:Type}`` placeholders); only identifiers that
passed :func:`identifier` are ever spliced into SQL text.

Replacing a slice (e.g. one source and a range of session dates of ``bars_1m``) is *stage,
insert, then delete by key*. The new rows, stamped with a fresh ``version``, are first staged
in a table nobody reads, in one piece or several (while the caller is still fetching the
rest); each piece is parsed there as it comes. Once every piece is in, one ``INSERT ...
SELECT`` moves them into the table as one part. A bulk stage (millions of rows) is instead
shaped like the target (same engine, partition and sorting keys) and its parts are handed to
the table a partition at a time (``ATTACH PARTITION ... FROM``: atomic per partition, hard
links, no copy of the rows; pieces first merged to one part per partition), unless the
version must be newer than the stamp (a concurrent writer published meanwhile): then the
``INSERT ... SELECT``, re-stamping. Only when that has succeeded
are the slice's rows of every *older* version deleted (never a newer one: a concurrent
writer's complete version survives; ``HistoricalStore`` serialises such writers with a lock).
A failure before that leaves the table untouched; a failed move removes whatever part of the
new version landed. Readers see the old slice or the new one, and during the short window
between the move and the delete both, which ``ReplacingMergeTree(version)`` + ``FINAL``
resolves to the new rows for every key they share. One part per replacement matters: the
delete is a mutation, which waits for any background merge of the parts it touches, and many
small parts (or the empty parts earlier deletes left, which are therefore dropped at once)
start such merges. A ``Memory`` stage holds the new rows uncompressed in the server's memory
until the move (about 200 bytes a bar); a bulk stage is on disk like any table.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import clickhouse_connect
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from quant_core.contracts import SYMBOL_PATTERN
from quant_resources.settings import (
    DEFAULT_DATABASE,
    clickhouse_url,
    redact_url,
)

# pandas only in signatures: importing it costs every `quant live` start about 0.7 s of CPU.
if TYPE_CHECKING:
    import pandas as pd

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_PART_NAME = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
STAGE_PREFIX = "_stage_"
STALE_STAGE_NS = 24 * 3600 * 10**9  # a stage this old was left by a process that died
# Keys are unique within a slice (every caller validates that), so the insert-time
# ReplacingMergeTree pass over the block would find nothing to collapse.
_MOVE_SETTINGS = {"optimize_on_insert": 0}
# One part per partition and piece (not one per million rows): fewer parts to hand over, and
# fewer small parts to start the merges a later delete waits for.
_STAGE_SETTINGS = {"optimize_on_insert": 0, "max_insert_block_size": 1 << 26}
# chdb allows one engine per process: every resource on the same URL shares one client.
_CLIENTS: dict[str, Client] = {}
_CLIENTS_LOCK = threading.Lock()


class WarehouseError(RuntimeError):
    """A warehouse operation failed; the message names the table, column or value involved."""


class WarehouseValidationError(WarehouseError):
    """Data refused before it reached the server (unknown column, invalid symbol): retrying
    the same rows can never succeed."""


def identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise WarehouseError(f"identifier {name!r} is not a valid table or column name")
    return name


def _connect(url: str) -> Client:
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        database = parse_qs(parts.query).get("database", [DEFAULT_DATABASE])[0]
        client = clickhouse_connect.get_client(dsn=f"chdb://{parts.path}")
    elif parts.scheme in ("http", "https"):
        database = unquote(parts.path.strip("/")) or DEFAULT_DATABASE
        client = clickhouse_connect.get_client(
            host=parts.hostname,
            port=parts.port or (8443 if parts.scheme == "https" else 8123),
            username=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            secure=parts.scheme == "https",
            database="default",
            # One client serves every thread of the process; a server session would refuse
            # their overlapping queries, and nothing here needs one (no temporary tables, no SET).
            autogenerate_session_id=False,
            **{k: v[0] for k, v in parse_qs(parts.query).items()},
        )
    else:
        raise WarehouseError(
            f"CLICKHOUSE_URL={redact_url(url)!r}: scheme must be http, https or chdb"
        )
    client.command(f"CREATE DATABASE IF NOT EXISTS {identifier(database)}")
    client.database = database
    return client


class WarehouseOperations:
    """What the warehouse does, shared by the plain :class:`Warehouse` (``quant live``, no
    Dagster) and Dagster's ``quant_resources.warehouse.WarehouseResource``: both provide
    ``url`` and the caches ``_columns`` (table -> columns) and ``_resolved`` (the URL)."""

    @property
    def resolved_url(self) -> str:
        # Resolved once per resource: the local default asks the endpoint file and /ping,
        # which must not happen for every query.
        if self._resolved is None:
            self._resolved = self.url or clickhouse_url()
        return self._resolved

    @property
    def display_url(self) -> str:
        return redact_url(self.resolved_url)

    @property
    def client(self) -> Client:
        url = self.resolved_url
        with _CLIENTS_LOCK:
            if url not in _CLIENTS:
                try:
                    _CLIENTS[url] = _connect(url)
                except ClickHouseError as exc:
                    raise WarehouseError(
                        f"cannot reach the warehouse at {self.display_url}: {exc}"
                    ) from exc
            return _CLIENTS[url]

    @property
    def database(self) -> str:
        return self.client.database

    # -- reads ------------------------------------------------------------------------------
    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        return self.client.query_arrow(sql, parameters=dict(params or {}))

    def query_df(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        return self.client.query_df(sql, parameters=dict(params or {}))

    def query_rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        return self.client.query(sql, parameters=dict(params or {})).result_rows

    def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        rows = self.query_rows(sql, params)
        return rows[0][0] if rows else None

    # -- DDL and commands -------------------------------------------------------------------
    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        self._columns.clear()  # DDL may change a table's columns
        return self.client.command(sql, parameters=dict(params or {}))

    def table_columns(self, table: str) -> dict[str, str]:
        """Column name -> ClickHouse type, for validating writes before they start."""
        if table not in self._columns:
            rows = self.query_rows(
                "SELECT name, type FROM system.columns WHERE database = {db:String} "
                "AND table = {t:String} AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') "
                "ORDER BY position",
                {"db": self.database, "t": identifier(table)},
            )
            if not rows:
                raise WarehouseError(
                    f"table {table!r} does not exist in database {self.database!r} "
                    "(materialise the clickhouse_schema asset first)"
                )
            self._columns[table] = dict(rows)
        return self._columns[table]

    # -- writes -----------------------------------------------------------------------------
    def insert(
        self,
        table: str,
        data: pa.Table | pd.DataFrame,
        *,
        dedup_token: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> int:
        """Insert all rows of ``data`` (Arrow or pandas). With ``dedup_token``, a retried insert
        of the same rows is dropped by the server instead of duplicated."""
        arrow = (
            data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        )
        self._validate(table, arrow)
        merged = dict(settings or {})
        if dedup_token is not None:
            merged["insert_deduplication_token"] = dedup_token
        return self._insert_validated(table, table, arrow, merged)

    def _insert_validated(
        self, table: str, into: str, arrow: pa.Table, settings: Mapping[str, Any] | None = None
    ) -> int:
        if arrow.num_rows == 0:
            return 0
        try:
            self.client.insert_arrow(into, arrow, settings=dict(settings or {}) or None)
        except ClickHouseError as exc:
            raise WarehouseError(f"insert into {table!r} failed: {exc}") from exc
        return arrow.num_rows

    def replace_slice(
        self,
        table: str,
        where: str,
        params: Mapping[str, Any],
        data: pa.Table,
        *,
        version_column: str = "version",
    ) -> int:
        """Replace the rows matching ``where`` (bound ``params``) with ``data``; see module doc."""
        with self.slice_replacement(table, where, params, version_column=version_column) as stage:
            stage.add(data)
        return stage.rows

    @contextlib.contextmanager
    def slice_replacement(
        self,
        table: str,
        where: str,
        params: Mapping[str, Any],
        *,
        version_column: str = "version",
    ) -> Iterator[StagedSlice]:
        """Replace the rows matching ``where`` with every piece given to ``add`` inside the
        block, all published when the block ends without error (see module doc). An empty
        stage is refused: replacing a slice with nothing would only delete it. This takes no
        lock: concurrent writers of one slice go through ``HistoricalStore`` (store.py)."""
        with self.staging(table, version_column=version_column) as stage:
            yield stage
            if not stage.rows:
                raise WarehouseError(
                    f"refusing to replace a slice of {table!r} with no rows "
                    f"(slice {where} with {dict(params)!r})"
                )
            self.move(stage, stage.version)
            self.delete_older(table, where, params, stage.version, version_column=version_column)

    @contextlib.contextmanager
    def staging(
        self, table: str, *, version_column: str = "version", bulk: bool = False
    ) -> Iterator[StagedSlice]:
        """A table shaped like ``table`` to stage a new version in; dropped when the block
        ends. Nothing here touches ``table`` itself (see ``move``, ``delete_older``).
        ``Memory`` by default; ``bulk`` (arch2, #18: millions of rows, an archive day of
        trades): the table's own engine and keys, so ``move`` hands its parts over instead of
        copying the rows (the extra DDL and files cost more than a small copy)."""
        self.table_columns(table)  # a missing table is named before anything starts
        stage = StagedSlice(self, identifier(table), identifier(version_column), bulk)
        self._drop_stale_stages(table)
        engine = "" if bulk else " ENGINE = Memory"
        self.client.command(f"CREATE TABLE {stage.name} AS {stage.table}{engine}")
        try:
            yield stage
        finally:
            self.client.command(f"DROP TABLE IF EXISTS {stage.name} SYNC")

    def move(self, stage: StagedSlice, version: int) -> None:
        """Move every staged row into the table as one part, stamped ``version``. A failed move
        removes whatever part of that version landed, so the table holds all of it or none."""
        col = stage.version_column
        try:
            if stage.bulk and version == stage.version:  # stamped already: parts move over
                self._attach_stage(stage)
                return
            columns = list(map(identifier, self.table_columns(stage.table)))
            select = ", ".join(f"{{_version:UInt64}} AS {c}" if c == col else c for c in columns)
            self.client.command(
                f"INSERT INTO {stage.table} ({', '.join(columns)}) SELECT {select} "
                f"FROM {stage.name}",
                parameters={"_version": version},
                settings=_MOVE_SETTINGS,
            )
        except Exception:
            self.delete_version(stage.table, version, version_column=col)
            raise

    def _attach_stage(self, stage: StagedSlice) -> None:
        """arch2 (#18): the stage's parts join the table, a partition at a time, each atomic
        (hard links, no copy of the rows: the staged rows carry the version already)."""
        for partition, parts in self.query_rows(
            "SELECT partition_id, count() FROM system.parts WHERE database = {db:String} "
            "AND table = {t:String} AND active GROUP BY partition_id ORDER BY partition_id",
            {"db": self.database, "t": stage.name},
        ):
            if not _PART_NAME.match(partition):
                raise WarehouseError(f"unexpected partition id {partition!r} in {stage.name}")
            if parts > 1:  # pieces: one part per partition still (see the module docstring)
                self.client.command(f"OPTIMIZE TABLE {stage.name} PARTITION ID '{partition}' FINAL")
            self.client.command(
                f"ALTER TABLE {stage.table} ATTACH PARTITION ID '{partition}' FROM {stage.name}"
            )

    def delete_version(self, table: str, version: int, *, version_column: str = "version") -> None:
        """Delete the rows of one ``version`` (a move that did not complete)."""
        col = identifier(version_column)
        self._delete(table, f"{col} = {{_version:UInt64}}", {"_version": version})

    def delete_older(
        self,
        table: str,
        where: str,
        params: Mapping[str, Any],
        version: int,
        *,
        version_column: str = "version",
    ) -> None:
        """Delete the rows matching ``where`` of every version *older* than ``version``. Older,
        not merely other: a writer never deletes a newer version someone else moved in."""
        col = identifier(version_column)
        bound = {**params, "_version": version}
        self._delete(table, f"({where}) AND {col} < {{_version:UInt64}}", bound)
        self._drop_empty_parts(table)

    def _drop_empty_parts(self, table: str) -> None:
        """Parts the delete emptied stay active until a cleanup long after; a few of them
        start a merge, and the next replacement's delete (a mutation) waits for that merge
        (up to a second here). An empty part holds nothing: dropping it loses nothing, and
        one a merge took first is left to the merge."""
        for (name,) in self.query_rows(
            "SELECT name FROM system.parts WHERE database = {db:String} AND table = {t:String} "
            "AND active AND rows = 0",
            {"db": self.database, "t": table},
        ):
            if _PART_NAME.match(name):
                with contextlib.suppress(ClickHouseError):
                    self.client.command(f"ALTER TABLE {identifier(table)} DROP PART '{name}'")

    def _drop_stale_stages(self, table: str) -> None:
        cutoff = time.time_ns() - STALE_STAGE_NS
        for (name,) in self.query_rows(
            "SELECT name FROM system.tables "
            "WHERE database = {db:String} AND startsWith(name, {p:String})",
            {"db": self.database, "p": f"{STAGE_PREFIX}{table}_"},
        ):
            stamp = name.rsplit("_", 1)[-1]
            if stamp.isdigit() and int(stamp) < cutoff:
                self.client.command(f"DROP TABLE IF EXISTS {identifier(name)} SYNC")

    def _delete(self, table: str, where: str, params: Mapping[str, Any]) -> None:
        self.client.command(
            f"ALTER TABLE {identifier(table)} DELETE WHERE {where}",
            parameters=dict(params),
            settings={"mutations_sync": 2},
        )

    def _validate(self, table: str, data: pa.Table) -> None:
        columns = self.table_columns(table)
        unknown = [c for c in data.column_names if c not in columns]
        if unknown:
            raise WarehouseValidationError(
                f"column {unknown[0]!r} does not exist in table {table!r} "
                f"(columns: {', '.join(columns)})"
            )
        if "symbol" in data.column_names and data.num_rows:
            # A bar table repeats a handful of symbols millions of times: check each once.
            symbols = pc.unique(data.column("symbol").cast(pa.string()))
            ok = pc.match_substring_regex(symbols, SYMBOL_PATTERN)
            if not pc.all(pc.fill_null(ok, False)).as_py():
                bad = symbols.filter(pc.invert(pc.fill_null(ok, False)))[0].as_py()
                raise WarehouseValidationError(
                    f"symbol={bad!r} in data for {table!r} is not a valid symbol"
                )


class Warehouse(WarehouseOperations):
    """The ClickHouse warehouse without Dagster. ``url`` defaults to ``CLICKHOUSE_URL``, else
    chDB in QUANT_HOME."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self._columns: dict[str, dict[str, str]] = {}
        self._resolved: str | None = None

    def __repr__(self) -> str:
        return f"Warehouse(url={redact_url(self.url) if self.url else None!r})"


class StagedSlice:
    """The new version of one slice, filled piece by piece (see ``slice_replacement``).
    ``add`` validates each piece against the target table before staging it; it may be
    called from another thread than the one that opened the replacement."""

    def __init__(
        self, warehouse: WarehouseOperations, table: str, version_column: str, bulk: bool = False
    ) -> None:
        self.warehouse = warehouse
        self.bulk = bulk
        self.table = table
        self.version_column = version_column
        self.version = time.time_ns()
        self.name = identifier(f"{STAGE_PREFIX}{table}_{self.version}")
        self.rows = 0
        self.pieces = 0

    def add(self, data: pa.Table) -> int:
        if self.version_column in data.column_names:
            data = data.drop_columns([self.version_column])
        stamped = data.append_column(
            self.version_column,
            pa.array(np.full(data.num_rows, self.version, dtype=np.uint64)),
        )
        self.warehouse._validate(self.table, stamped)
        stamped = _low_cardinality(stamped, self.warehouse.table_columns(self.table))
        # A token per piece: two equal pieces are two pieces (the table may deduplicate
        # repeated inserts, and the stage is created like it).
        self.pieces += 1
        token = {"insert_deduplication_token": f"{self.name}-{self.pieces}"}
        added = self.warehouse._insert_validated(
            self.table, self.name, stamped, {**_STAGE_SETTINGS, **token}
        )
        self.rows += added
        return added


def _low_cardinality(data: pa.Table, types: Mapping[str, str]) -> pa.Table:
    """arch2 (#18): plain string columns of ``LowCardinality(String)`` columns sent
    dictionary-encoded, which ClickHouse takes as they are; from plain strings it builds the
    dictionary itself, row by row (about 3x the insert's time for an archive day of trades)."""
    for i, name in enumerate(data.column_names):
        column = data.column(i)
        if types.get(name, "").startswith("LowCardinality(String") and pa.types.is_string(
            column.type
        ):
            encoded = _one_value(column)
            data = data.set_column(
                i, name, pc.dictionary_encode(column) if encoded is None else encoded
            )
    return data


def _one_value(column: pa.ChunkedArray) -> pa.DictionaryArray | None:
    """arch3 (#18): ``column`` dictionary-encoded when every row holds the same text (an
    archive file's source, symbol, stream and origin), found by comparing each row with the
    first, which costs about a quarter of hashing every row (``dictionary_encode``); None
    when not."""
    if not len(column) or column.null_count:
        return None
    first = column[0]
    if not pc.all(pc.equal(column, first)).as_py():
        return None
    indices = pa.array(np.zeros(len(column), np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array([first.as_py()], pa.string()))


def close_all_clients() -> None:
    """Close every cached client (end of a CLI command, end of a test)."""
    with _CLIENTS_LOCK:
        for client in _CLIENTS.values():
            client.close()
        _CLIENTS.clear()
