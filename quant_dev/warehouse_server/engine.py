"""The chDB engine behind the endpoint: one engine per process, every call serialised by a lock.

chDB keeps ``USE`` and ``SET`` state per connection handle, so each distinct (database,
settings) context gets its own cached handle with that state applied once; requests never run
``SET``/``USE`` on a shared handle (sessions are emulated on top, see ``app``). All calls are
blocking and meant for a worker thread.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import chdb

from quant_dev.warehouse_server.protocol import (
    ClickHouseError,
    error,
    from_engine_exception,
    quote_identifier,
    quote_setting_value,
)

_END = object()


@dataclass(frozen=True)
class Context:
    """What a query runs under: current database and settings (sorted name/value pairs)."""

    database: str = "default"
    settings: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, database: str | None, settings: dict[str, str]) -> Context:
        return cls(database or "default", tuple(sorted(settings.items())))


@dataclass
class Outcome:
    """A finished engine call: its payload (kept alive with the chdb result) and statistics."""

    payload: memoryview | bytes
    summary: dict[str, str]
    keepalive: Any = None


def _summary(result: Any) -> dict[str, str]:
    def stat(name: str) -> int:
        method = getattr(result, name, None)
        try:
            return int(method()) if method else 0
        except Exception:
            return 0

    elapsed = getattr(result, "elapsed", None)
    return {
        "read_rows": str(stat("rows_read")),
        "read_bytes": str(stat("bytes_read")),
        "written_rows": str(stat("rows_written")),
        "written_bytes": str(stat("bytes_written")),
        "total_rows_to_read": "0",
        "result_rows": "0",
        "result_bytes": "0",
        "elapsed_ns": str(int((elapsed() if callable(elapsed) else 0) * 1e9)),
    }


class Engine:
    def __init__(self, path: str, max_handles: int = 16):
        if "?" in path:
            raise ValueError("the warehouse path must not contain '?'")
        self.path = path
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._max_handles = max_handles
        self._handles: OrderedDict[Context, Any] = OrderedDict()
        # The base handle keeps the engine alive while cached handles come and go
        self._base = chdb.connect(path)
        version, timezone = str(self._base.query("SELECT version(), timezone()", "TSV")).split()
        self.version = version
        self.timezone = timezone
        self._baseline = self._changed_settings(self._base)

    # ---- handles (lock held) ----------------------------------------------------------------

    def _open(self, ctx: Context) -> Any:
        conn = chdb.connect(self.path)
        try:
            conn.query(f"USE {quote_identifier(ctx.database)}", "TSV")
            for name, value in ctx.settings:
                conn.query(f"SET {name} = {quote_setting_value(value)}", "TSV")
        except BaseException:
            conn.close()
            raise
        return conn

    def _handle(self, ctx: Context) -> Any:
        if self._closing.is_set():
            raise error("ABORTED", "The quant warehouse server is shutting down")
        conn = self._handles.get(ctx)
        if conn is not None:
            self._handles.move_to_end(ctx)
            return conn
        conn = self._open(ctx)
        self._handles[ctx] = conn
        while len(self._handles) > self._max_handles:
            _, evicted = self._handles.popitem(last=False)
            evicted.close()
        return conn

    @staticmethod
    def _changed_settings(conn: Any) -> dict[str, str]:
        rows = conn.query(
            "SELECT name, value FROM system.settings WHERE changed FORMAT JSONEachRow",
            "JSONEachRow",
        )
        return {
            row["name"]: row["value"] for row in map(json.loads, bytes(rows.bytes()).splitlines())
        }

    # ---- calls --------------------------------------------------------------------------------

    def query(self, sql: str, fmt: str, params: dict[str, str], ctx: Context) -> Outcome:
        with self._lock:
            try:
                result = self._handle(ctx).query(sql, fmt, params=params)
            except Exception as exc:
                raise from_engine_exception(exc) from None
        # A zero-copy view of chdb's buffer; the result object must outlive it
        view = result.get_memview().view()
        return Outcome(view, _summary(result), keepalive=result)

    def insert(self, statement: str, fmt: str, data: Iterable[bytes], ctx: Context) -> Outcome:
        """Stream ``data`` into ``statement``; returns once chdb has committed the rows."""
        with self._lock:
            inserter = None
            try:
                inserter = self._handle(ctx).send_insert(statement, fmt)
                for chunk in data:
                    inserter.append(chunk)
                result = inserter.finish()
            except Exception as exc:
                if inserter is not None:
                    with contextlib.suppress(Exception):
                        inserter.cancel()
                raise from_engine_exception(exc) from None
        summary = {
            "read_rows": str(result.rows_written),
            "read_bytes": str(result.bytes_written),
            "written_rows": str(result.rows_written),
            "written_bytes": str(result.bytes_written),
            "total_rows_to_read": "0",
            "result_rows": str(result.rows_written),
            "result_bytes": str(result.bytes_written),
            "elapsed_ns": str(int(result.elapsed * 1e9)),
        }
        return Outcome(b"", summary)

    def stream(
        self, sql: str, fmt: str, params: dict[str, str], ctx: Context, max_chunks: int = 32
    ) -> EngineStream:
        """Run a query in a producer thread that fills a bounded queue of result chunks."""
        stream = EngineStream(max_chunks)
        threading.Thread(
            target=self._produce, args=(stream, sql, fmt, params, ctx), daemon=True
        ).start()
        return stream

    def _produce(
        self, stream: EngineStream, sql: str, fmt: str, params: dict[str, str], ctx: Context
    ) -> None:
        with self._lock:
            result = None
            try:
                result = self._handle(ctx).send_query(sql, fmt, params=params)
                for chunk in result:
                    if not stream.put(chunk.bytes(), self._closing):
                        return
                stream.put(_END, self._closing)
            except Exception as exc:
                stream.put(from_engine_exception(exc), self._closing)
            finally:
                if result is not None:
                    with contextlib.suppress(Exception):
                        result.close()

    def explain_ast(self, sql: str, params: dict[str, str], ctx: Context) -> str:
        """The engine's parse tree of ``sql`` under ``ctx`` (nothing is executed)."""
        return bytes(self.query(f"EXPLAIN AST {sql}", "TSVRaw", params, ctx).payload).decode()

    def registry(self) -> tuple[list[str], list[str]]:
        """The names of every table function, table engine and database engine, and of
        every setting (query and MergeTree), this engine knows."""
        sources = self.query(
            "SELECT name FROM system.table_functions UNION ALL SELECT name FROM "
            "system.table_engines UNION ALL SELECT name FROM system.database_engines",
            "TSVRaw",
            {},
            Context(),
        )
        settings = self.query(
            "SELECT name FROM system.settings "
            "UNION ALL SELECT name FROM system.merge_tree_settings",
            "TSVRaw",
            {},
            Context(),
        )
        return (
            bytes(sources.payload).decode().split(),
            bytes(settings.payload).decode().split(),
        )

    def check_database(self, database: str) -> None:
        with self._lock:
            try:
                self._handle(Context(database))
            except Exception as exc:
                raise from_engine_exception(exc) from None

    def apply_set(self, settings: dict[str, str], statement: str) -> dict[str, str]:
        """Run a ``SET`` on a scratch handle carrying ``settings``; return the settings after it
        (as differences from a fresh handle, so engine defaults are not pinned)."""
        with self._lock:
            if self._closing.is_set():
                raise error("ABORTED", "The quant warehouse server is shutting down")
            conn = None
            try:
                conn = self._open(Context.of(None, settings))
                conn.query(statement, "TSV")
                changed = self._changed_settings(conn)
            except Exception as exc:
                raise from_engine_exception(exc) from None
            finally:
                if conn is not None:
                    conn.close()
        return {k: v for k, v in changed.items() if self._baseline.get(k) != v}

    def close(self) -> None:
        """Wait for the running call, then close every handle so chdb flushes and shuts down."""
        self._closing.set()
        with self._lock:
            for conn in self._handles.values():
                conn.close()
            self._handles.clear()
            if self._base is not None:
                self._base.close()
                self._base = None


class EngineStream:
    """The consumer side of a streamed query: ``get`` yields chunks, None at the end."""

    def __init__(self, max_chunks: int):
        self._queue: queue.Queue = queue.Queue(max_chunks)
        self._cancelled = threading.Event()

    def put(self, item: Any, closing: threading.Event) -> bool:
        """Producer side; False once the consumer went away (or the server gave up on it)."""
        while not self._cancelled.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                # A stalled client must not hold the engine forever once shutdown began
                if closing.is_set():
                    self._cancelled.set()
        return False

    def get(self) -> bytes | None:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if self._cancelled.is_set():
                    raise error(
                        "ABORTED", "Query was cancelled: the server is shutting down"
                    ) from None
        if item is _END:
            return None
        if isinstance(item, ClickHouseError):
            raise item
        return item

    def cancel(self) -> None:
        self._cancelled.set()
        # Unblock a producer waiting on a full queue
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self.get()) is not None:
            yield chunk
