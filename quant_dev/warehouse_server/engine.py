"""The chDB engine behind the endpoint: one engine per process, queries on their own handles.

chDB runs queries on separate connection handles concurrently (it releases the GIL), so a
request checks a handle out for the length of its engine call, and at most
``Limits.max_concurrent_queries`` calls run at once. Nothing here waits on a client for long
while it holds a handle or a slot: a streamed result goes to a ``ResultSpill`` (memory, then a
spool file) that the client drains at its own pace.

chDB keeps ``USE``/``SET`` state and temporary tables per handle. Requests without an HTTP
session share idle handles per (database, settings) context; an HTTP session gets a handle of its
own (its ``Seat``), so its temporary tables are its alone. A handle whose call raised is closed,
never reused: chDB keeps a failed query's partial output in the handle and would hand it to the
next query.

Every query carries ``max_execution_time`` (a client may lower it, never raise it) and a
``log_comment`` naming its handle, by which a disconnecting client's query is killed; a
watchdog kills whatever outlives the cap by other means. All calls block; run them in a worker
thread.

What cancellation cannot do: chDB stops a killed query only at ClickHouse's own checkpoints
(between blocks, in waits it polls), so a step blocked elsewhere (a ``url()`` read) ends at its
own timeout or the execution cap; a query whose own ``SETTINGS`` replace ``log_comment`` cannot
be found by its marker and runs until the watchdog's cap. Writes are never cancelled on
disconnect (a killed INSERT ... SELECT could leave part of its rows). A ``url()`` query on this
endpoint runs its inner request on another handle; only with every slot held by such queries
does the inner one wait, until the cap ends the outer ones.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import chdb

from quant_dev.warehouse_server.limits import Limits
from quant_dev.warehouse_server.protocol import (
    ClickHouseError,
    error,
    from_engine_exception,
    quote_identifier,
    quote_setting_value,
)

log = logging.getLogger(__name__)

_MARKER_PREFIX = "quant-handle-"
# A statement that may create a temporary table leaves a handle that must not be shared
_TEMPORARY_RE = re.compile(r"\bTEMPORARY\b", re.IGNORECASE)
_WATCHDOG_PERIOD = 1.0
_WATCHDOG_GRACE = 2.0
# How long, in all, a streamed query may wait for its reader to make room in memory before its
# result goes to disk: a reader that keeps up costs no disk, a stalled one a second of a slot
_SPILL_PATIENCE = 1.0


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


@dataclass(eq=False)
class Handle:
    """A chDB connection and the database/settings last applied to it."""

    conn: Any
    marker: str
    database: str = "default"
    settings: dict[str, str] = field(default_factory=dict)
    started: float = 0.0  # time.monotonic() of its current call's checkout


@dataclass
class Seat:
    """An HTTP session's own handle (None until its first query, or after a failure)."""

    handle: Handle | None = None


class Ticket:
    """One request's engine call, so that the request can cancel it: before it starts, or while
    it runs (``KILL QUERY`` by its handle's marker, from the engine's control handle)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._marker: str | None = None
        self.cancelled = False

    def attach(self, engine: Engine, marker: str) -> None:
        with self._lock:
            if self.cancelled:
                raise cancelled_error()
            self._engine, self._marker = engine, marker

    def detach(self) -> None:
        # Taking the lock waits for a KILL in flight, so it never reaches the handle's next query
        with self._lock:
            self._engine = self._marker = None

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._engine is not None and self._marker is not None:
                self._engine.kill(self._marker)


def cancelled_error() -> ClickHouseError:
    return error("QUERY_WAS_CANCELLED", "Query was cancelled: the client went away")


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
    def __init__(
        self,
        path: str,
        limits: Limits | None = None,
        spool_dir: str | None = None,
        max_idle_handles: int = 16,
    ):
        if "?" in path:
            raise ValueError("the warehouse path must not contain '?'")
        self.path = path
        self.limits = limits or Limits()
        self.spool_dir = spool_dir
        self._closing = threading.Event()
        self._max_idle = max_idle_handles
        # Guards the handle bookkeeping below; never held across a query
        self._lock = threading.Lock()
        self._idle: OrderedDict[Context, list[Handle]] = OrderedDict()
        self._seated: set[Handle] = set()
        self._running: set[Handle] = set()
        self._ids = itertools.count(1)
        self._slots = threading.BoundedSemaphore(self.limits.max_concurrent_queries)
        # The base handle keeps the engine alive while other handles come and go; the control
        # handle runs KILL QUERY for cancellations and the watchdog
        self._base = chdb.connect(path)
        self._control = chdb.connect(path)
        self._control_lock = threading.Lock()
        version, timezone = str(self._base.query("SELECT version(), timezone()", "TSV")).split()
        self.version = version
        self.timezone = timezone
        self._baseline = self._changed_settings(self._base)
        self._watchdog = threading.Thread(target=self._watch, name="warehouse-watch", daemon=True)
        self._watchdog.start()

    # ---- handles ------------------------------------------------------------------------------

    def _open(self) -> Handle:
        return Handle(chdb.connect(self.path), f"{_MARKER_PREFIX}{next(self._ids)}")

    @staticmethod
    def _apply(handle: Handle, database: str, settings: dict[str, str]) -> None:
        """Bring ``handle`` to ``database`` and exactly ``settings`` (unset ones to DEFAULT)."""
        if handle.database != database:
            handle.conn.query(f"USE {quote_identifier(database)}", "TSV")
            handle.database = database
        changes = [
            f"{name} = {quote_setting_value(value)}"
            for name, value in settings.items()
            if handle.settings.get(name) != value
        ]
        changes += [f"{name} = DEFAULT" for name in handle.settings if name not in settings]
        if changes:
            handle.settings = {}  # unknown until the SET succeeds
            handle.conn.query("SET " + ", ".join(changes), "TSV")
            handle.settings = dict(settings)

    def _bounded(self, handle: Handle, ctx: Context) -> dict[str, str]:
        """The context's settings with the server's: the execution-time cap, and the marker."""
        settings = dict(ctx.settings)
        cap = self.limits.max_execution_time
        try:
            asked = float(settings.get("max_execution_time", "0"))
        except ValueError:
            asked = 0.0
        if not 0 < asked <= cap:
            settings["max_execution_time"] = f"{cap:g}"
        settings["log_comment"] = handle.marker
        return settings

    def _checkout(self, ctx: Context, seat: Seat | None) -> Handle:
        handle = None
        with self._lock:
            if self._closing.is_set():
                raise error("ABORTED", "The quant warehouse server is shutting down")
            if seat is not None:
                handle = seat.handle
                if handle is not None and handle in self._running:
                    # The session's last query was cancelled (its client left) and is still
                    # winding down; one chDB handle never runs two queries at once
                    raise error("SESSION_IS_LOCKED", "Session is busy with a cancelled query")
            elif self._idle.get(ctx):
                handle = self._idle[ctx].pop()
                if not self._idle[ctx]:
                    del self._idle[ctx]
        if handle is None:
            handle = self._open()
        try:
            self._apply(handle, ctx.database, self._bounded(handle, ctx))
        except BaseException:
            self._discard(handle, seat)
            raise
        with self._lock:
            handle.started = time.monotonic()
            self._running.add(handle)
            if seat is not None:
                seat.handle = handle
                self._seated.add(handle)
        return handle

    def _checkin(self, handle: Handle, ctx: Context, seat: Seat | None, reusable: bool) -> None:
        closing = handle
        with self._lock:
            self._running.discard(handle)
            if reusable and not self._closing.is_set():
                if seat is not None:
                    return
                self._idle.setdefault(ctx, []).append(handle)
                self._idle.move_to_end(ctx)
                if self._idle_count() <= self._max_idle:
                    return
                closing, seat = self._evict_one(), None
        self._discard(closing, seat)

    def _idle_count(self) -> int:
        return sum(map(len, self._idle.values()))

    def _evict_one(self) -> Handle:
        ctx, handles = next(iter(self._idle.items()))
        handle = handles.pop(0)
        if not handles:
            del self._idle[ctx]
        return handle

    def _discard(self, handle: Handle, seat: Seat | None) -> None:
        with self._lock:
            self._running.discard(handle)
            self._seated.discard(handle)
            if seat is not None and seat.handle is handle:
                seat.handle = None
        with contextlib.suppress(Exception):
            handle.conn.close()

    @contextlib.contextmanager
    def _call(self, ctx: Context, seat: Seat | None, ticket: Ticket | None, sql: str = ""):
        """A slot and a handle for one call; the handle is closed if the call raised."""
        ticket = ticket or Ticket()
        self._take_slot(ticket)
        try:
            handle = self._checkout(ctx, seat)
            reusable = False
            try:
                ticket.attach(self, handle.marker)
                yield handle
                reusable = not (seat is None and _TEMPORARY_RE.search(sql))
            finally:
                ticket.detach()
                self._checkin(handle, ctx, seat, reusable)
        finally:
            self._slots.release()

    def _take_slot(self, ticket: Ticket) -> None:
        deadline = time.monotonic() + self.limits.max_execution_time
        while not self._slots.acquire(timeout=0.2):
            if ticket.cancelled:
                raise cancelled_error()
            if self._closing.is_set():
                raise error("ABORTED", "The quant warehouse server is shutting down")
            if time.monotonic() > deadline:
                raise error(
                    "TOO_MANY_SIMULTANEOUS_QUERIES",
                    f"Too many simultaneous queries: all {self.limits.max_concurrent_queries} "
                    f"slots stayed busy for {self.limits.max_execution_time:g} s",
                )

    def release(self, seat: Seat) -> None:
        """Close an HTTP session's handle (the session ended); its temporary tables go."""
        handle = seat.handle
        if handle is not None:
            self._discard(handle, seat)

    @staticmethod
    def _changed_settings(conn: Any) -> dict[str, str]:
        rows = conn.query(
            "SELECT name, value FROM system.settings WHERE changed FORMAT JSONEachRow",
            "JSONEachRow",
        )
        return {
            row["name"]: row["value"] for row in map(json.loads, bytes(rows.bytes()).splitlines())
        }

    # ---- cancellation -------------------------------------------------------------------------

    def kill(self, marker: str) -> None:
        """Cancel the query running on the handle ``marker`` names (returns at once)."""
        self._control_query(
            f"KILL QUERY WHERE Settings['log_comment'] = {quote_setting_value(marker)} ASYNC"
        )

    def _control_query(self, sql: str) -> None:
        with self._control_lock:
            if self._control is None:
                return
            try:
                self._control.query(sql, "TSV")
            except Exception:
                log.exception("warehouse control query failed: %s", sql)

    def _watch(self) -> None:
        # max_execution_time on the handle covers queries that keep it; this covers the rest
        # (a query's own SETTINGS clause raising it, or a step that ignores it)
        limit = self.limits.max_execution_time + _WATCHDOG_GRACE
        while not self._closing.wait(_WATCHDOG_PERIOD):
            # Asks chDB only when a call has run that long, so it costs nothing otherwise
            oldest = time.monotonic() - limit
            with self._lock:
                overdue = any(handle.started < oldest for handle in self._running)
            if overdue:
                self._control_query(f"KILL QUERY WHERE elapsed > {limit:g} ASYNC")

    def running_queries(self) -> int:
        """How many engine calls hold a handle right now."""
        with self._lock:
            return len(self._running)

    # ---- calls --------------------------------------------------------------------------------

    def query(
        self,
        sql: str,
        fmt: str,
        params: dict[str, str],
        ctx: Context,
        seat: Seat | None = None,
        ticket: Ticket | None = None,
    ) -> Outcome:
        try:
            with self._call(ctx, seat, ticket, sql) as handle:
                result = handle.conn.query(sql, fmt, params=params)
        except Exception as exc:
            raise from_engine_exception(exc) from None
        # A zero-copy view of chdb's buffer; the result object must outlive it
        view = result.get_memview().view()
        return Outcome(view, _summary(result), keepalive=result)

    def insert(
        self,
        statement: str,
        fmt: str,
        data: Iterable[bytes],
        ctx: Context,
        seat: Seat | None = None,
    ) -> Outcome:
        """Stream ``data`` into ``statement``; returns once chdb has committed the rows."""
        try:
            with self._call(ctx, seat, None) as handle:
                inserter = handle.conn.send_insert(statement, fmt)
                try:
                    for chunk in data:
                        inserter.append(chunk)
                    result = inserter.finish()
                except BaseException:
                    with contextlib.suppress(Exception):
                        inserter.cancel()
                    raise
        except Exception as exc:
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
        self,
        sql: str,
        fmt: str,
        params: dict[str, str],
        ctx: Context,
        seat: Seat | None = None,
        ticket: Ticket | None = None,
    ) -> ResultSpill:
        """Run a query in a producer thread that writes its result chunks to a spill."""
        spill = ResultSpill(
            self.limits.result_memory_bytes, self.limits.result_spool_bytes, self.spool_dir
        )
        ticket = ticket or Ticket()
        spill.on_cancel = ticket.cancel
        threading.Thread(
            target=self._produce,
            args=(spill, sql, fmt, params, ctx, seat, ticket),
            name="warehouse-stream",
            daemon=True,
        ).start()
        return spill

    def _produce(
        self,
        spill: ResultSpill,
        sql: str,
        fmt: str,
        params: dict[str, str],
        ctx: Context,
        seat: Seat | None,
        ticket: Ticket,
    ) -> None:
        try:
            with self._call(ctx, seat, ticket, sql) as handle:
                result = handle.conn.send_query(sql, fmt, params=params)
                try:
                    for chunk in result:
                        # Raises (closing the handle) once the client is gone or the spill full
                        spill.put(chunk.bytes())
                finally:
                    with contextlib.suppress(Exception):
                        result.close()
            spill.finish()
        except Exception as exc:
            spill.fail(from_engine_exception(exc))

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
        try:
            with self._call(Context(database), None, None):
                pass
        except Exception as exc:
            raise from_engine_exception(exc) from None

    def apply_set(self, settings: dict[str, str], statement: str) -> dict[str, str]:
        """Run a ``SET`` on a scratch handle carrying ``settings``; return the settings after it
        (as differences from a fresh handle, so engine defaults are not pinned)."""
        if self._closing.is_set():
            raise error("ABORTED", "The quant warehouse server is shutting down")
        handle = self._open()
        try:
            self._apply(handle, "default", settings)
            handle.conn.query(statement, "TSV")
            changed = self._changed_settings(handle.conn)
        except Exception as exc:
            raise from_engine_exception(exc) from None
        finally:
            handle.conn.close()
        return {k: v for k, v in changed.items() if self._baseline.get(k) != v}

    def close(self) -> None:
        """Cancel what still runs, wait for it, then close every handle so chdb flushes."""
        with self._lock:
            if self._closing.is_set():
                return  # closed already (serve() closes again after a failed startup)
            self._closing.set()
        with self._lock:
            running = [handle.marker for handle in self._running]
        for marker in running:
            self.kill(marker)
        for _ in range(self.limits.max_concurrent_queries):
            self._slots.acquire()
        self._watchdog.join()
        with self._lock:
            handles = [h for group in self._idle.values() for h in group] + list(self._seated)
            self._idle.clear()
            self._seated.clear()
        for handle in handles:
            with contextlib.suppress(Exception):
                handle.conn.close()
        with self._control_lock:
            if self._control is not None:
                self._control.close()
                self._control = None
        if self._base is not None:
            self._base.close()
            self._base = None


class ResultSpill:
    """A streamed result between chDB (producer) and the client (consumer) that never makes the
    producer wait on the client for long: chunks stay in memory up to ``memory_limit`` bytes (the
    producer waits for room there at most ``_SPILL_PATIENCE`` seconds per query, in all), then go
    to a file in ``spool_dir`` up to ``disk_limit`` bytes; past that the query fails. ``get``
    returns the chunks in order and None at the end."""

    def __init__(self, memory_limit: int, disk_limit: int, spool_dir: str | None):
        self._cond = threading.Condition()
        self._entries: deque[bytes | tuple[int, int]] = deque()
        self._memory = 0
        self._memory_limit = memory_limit
        self._disk_limit = disk_limit
        self._spool_dir = spool_dir
        self._file: Any = None
        self._file_end = 0
        self._file_entries = 0
        self._done = False
        self._error: ClickHouseError | None = None
        self._cancelled = False
        self._patience = _SPILL_PATIENCE
        self.on_cancel = None

    # ---- producer -----------------------------------------------------------------------------

    def put(self, chunk: bytes) -> None:
        with self._cond:
            if self._memory + len(chunk) > self._memory_limit and self._patience > 0:
                started = time.monotonic()
                self._cond.wait_for(
                    lambda: self._cancelled or self._memory + len(chunk) <= self._memory_limit,
                    self._patience,
                )
                self._patience -= time.monotonic() - started
            if self._cancelled:
                raise cancelled_error()
            if self._memory + len(chunk) <= self._memory_limit:
                self._entries.append(chunk)
                self._memory += len(chunk)
            else:
                self._entries.append(self._spill(chunk))
            self._cond.notify_all()

    def _spill(self, chunk: bytes) -> tuple[int, int]:
        if self._file_entries == 0:
            self._file_end = 0  # everything spilled so far was read: start the file over
        if self._file_end + len(chunk) > self._disk_limit:
            raise error(
                "TOO_MANY_ROWS_OR_BYTES",
                f"The result is read too slowly: more than {self._memory_limit} bytes in memory "
                f"and {self._disk_limit} bytes spooled to disk wait for the client",
            )
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._spool_dir)  # noqa: SIM115
        os.pwrite(self._file.fileno(), chunk, self._file_end)
        entry = (self._file_end, len(chunk))
        self._file_end += len(chunk)
        self._file_entries += 1
        return entry

    def finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, exc: ClickHouseError) -> None:
        with self._cond:
            self._error = exc
            self._done = True
            self._cond.notify_all()

    # ---- consumer -----------------------------------------------------------------------------

    def get(self) -> bytes | None:
        with self._cond:
            while not self._entries and not self._done and not self._cancelled:
                self._cond.wait()
            if self._cancelled:
                raise cancelled_error()
            if not self._entries:
                if self._error is not None:
                    raise self._error
                self._close_file()
                return None
            entry = self._entries.popleft()
            if isinstance(entry, bytes):
                self._memory -= len(entry)
                self._cond.notify_all()  # room for a producer waiting on memory
                return entry
            offset, size = entry
            chunk = os.pread(self._file.fileno(), size, offset)
            self._file_entries -= 1
            return chunk

    def cancel(self) -> None:
        """The client is gone: stop the producer (and its query) and drop what was buffered."""
        with self._cond:
            already = self._cancelled
            self._cancelled = True
            self._entries.clear()
            self._memory = 0
            self._close_file()
            self._cond.notify_all()
        if not already and not self._done and self.on_cancel is not None:
            self.on_cancel()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._file_entries = 0

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self.get()) is not None:
            yield chunk
