"""``WarehouseResource``: ClickHouse SQL through clickhouse-connect, on a server or on chDB.

``CLICKHOUSE_URL`` selects the engine: ``http(s)://user:password@host:port/db`` for a ClickHouse
server or the project's own endpoint (``quant warehouse serve``), ``chdb:///dir?database=db``
for chDB in this process. The same SQL and the same client code run on both.

Values are always bound server-side (``{name:Type}`` placeholders); only identifiers that
passed :func:`identifier` are ever spliced into SQL text.

Replacing a slice (e.g. one source and session date of ``bars_1m``) is *write, then delete by
key*: the new rows are inserted with a fresh ``version``; only when that insert has succeeded
are the slice's rows of every other version deleted. A failed insert removes whatever part of
the new version landed and leaves the previous rows untouched, so readers see the old slice
or the new one, and during the short window between the two steps both, which
``ReplacingMergeTree(version)`` + ``FINAL`` resolves to the new rows for every key they share.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import clickhouse_connect
import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import Field, PrivateAttr

from quant_core.contracts import SYMBOL_PATTERN
from quant_resources.settings import DEFAULT_DATABASE, clickhouse_url, redact_url

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
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
            **{k: v[0] for k, v in parse_qs(parts.query).items()},
        )
    else:
        raise WarehouseError(
            f"CLICKHOUSE_URL={redact_url(url)!r}: scheme must be http, https or chdb"
        )
    client.command(f"CREATE DATABASE IF NOT EXISTS {identifier(database)}")
    client.database = database
    return client


class WarehouseResource(dg.ConfigurableResource):
    """The ClickHouse warehouse. ``url`` defaults to ``CLICKHOUSE_URL``, else chDB in QUANT_HOME."""

    url: str | None = Field(
        default=None,
        description="http(s)://user:password@host:port/db or chdb:///dir?database=db",
    )
    _columns: dict[str, dict[str, str]] = PrivateAttr(default_factory=dict)

    @property
    def resolved_url(self) -> str:
        return self.url or clickhouse_url()

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
        if arrow.num_rows == 0:
            return 0
        merged = dict(settings or {})
        if dedup_token is not None:
            merged["insert_deduplication_token"] = dedup_token
        try:
            self.client.insert_arrow(table, arrow, settings=merged or None)
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
        version = time.time_ns()
        if version_column in data.column_names:
            data = data.drop_columns([version_column])
        stamped = data.append_column(
            version_column, pa.array(np.full(data.num_rows, version, dtype=np.uint64))
        )
        self._validate(table, stamped)
        col = identifier(version_column)
        bound = {**params, "_version": version}
        try:
            self.insert(table, stamped)
        except Exception:
            self._delete(table, f"{col} = {{_version:UInt64}}", {"_version": version})
            raise
        self._delete(table, f"({where}) AND {col} != {{_version:UInt64}}", bound)
        return stamped.num_rows

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


def close_all_clients() -> None:
    """Close every cached client (end of a CLI command, end of a test)."""
    with _CLIENTS_LOCK:
        for client in _CLIENTS.values():
            client.close()
        _CLIENTS.clear()
