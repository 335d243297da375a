"""Order books on the live path: the live half of the kernel's books (``quant_core.kernel_books``).

The kernel keeps the books and puts their rows in its output; here are only the two things that
are live: ``SnapshotFetcher`` turns the kernel's ``SnapshotRequest`` s into ``GET /api/v3/depth``
calls with the pipeline's ``BinanceRest`` (the same weight budget as gap repair: ``limit=5000``
costs 250; a newer request of a symbol cancels the one still waiting) and hands each answer to
the pipeline, which logs it and gives it back to the kernel like any REST answer; and
``BookSink``, the sink that stores the kernel's book rows in ``book_updates``,
``book_snapshots`` and ``book_resyncs`` (snapshots go out on NATS through the NATS sink, and
to Redis through the Redis sink, from the same output).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pyarrow as pa

from quant_core.book_tables import book_resyncs_table, book_snapshots_table, book_updates_table
from quant_core.depth_decode import DEPTH_PATH
from quant_core.depth_sync import SnapshotRequest
from quant_core.kernel import KernelOutput
from quant_resources.live.sinks import WarehouseSink

log = logging.getLogger(__name__)
SOURCE = "binance"
BOOK_TABLES = ("book_updates", "book_snapshots", "book_resyncs")
RETRY_S = 1.0
# (symbol, request_id, params, body, recv_ns) -> put on the pipeline's queue
Deliver = Callable[[str, int, dict, bytes, int], Awaitable[None]]


class SnapshotFetcher:
    """Fetches the depth snapshots the kernel asks for (``fetch``), retrying until answered,
    superseded or stopping; ``close`` cancels what is still running."""

    def __init__(self, rest, deliver: Deliver) -> None:
        self.rest, self.deliver = rest, deliver
        self._fetches: dict[str, asyncio.Task] = {}

    def fetch(self, request: SnapshotRequest) -> None:
        old = self._fetches.get(request.symbol)
        if old is not None and not old.done():
            old.cancel()  # superseded: the kernel would ignore its answer anyway
        self._fetches[request.symbol] = asyncio.get_running_loop().create_task(
            self._fetch(request), name=f"depth-{request.symbol}"
        )

    async def _fetch(self, request: SnapshotRequest) -> None:
        params = {"symbol": request.symbol, "limit": request.limit}
        while True:
            try:
                answer = await asyncio.to_thread(self.rest.get, DEPTH_PATH, params)
                break
            except Exception as exc:  # keep trying until answered, superseded or stopping
                if self.rest.stopping.is_set():
                    return
                log.warning("depth snapshot of %s failed: %s", request.symbol, exc)
                await asyncio.sleep(RETRY_S)
        await self.deliver(request.symbol, request.request_id, params, answer.body, time.time_ns())

    async def close(self) -> None:
        for task in self._fetches.values():
            task.cancel()
        await asyncio.gather(*self._fetches.values(), return_exceptions=True)


@dataclass
class BookSink(WarehouseSink):
    """The warehouse sink's batches, dedup tokens, retries and write-ahead release, for the
    three book tables, built from the kernel's book rows (``KernelOutput.books``)."""

    tables: dict[str, list[pa.Table]] = field(
        default_factory=lambda: {table: [] for table in BOOK_TABLES}
    )
    rows_written: dict = field(default_factory=lambda: dict.fromkeys(BOOK_TABLES, 0))

    def stage(self, out: KernelOutput) -> None:
        rows = out.books
        if rows is None:
            return
        books = rows.output
        if len(books.updates["price"]):
            table = book_updates_table(books.symbols, books.updates, rows.ts_init, SOURCE)
            self.tables["book_updates"].append(table)
        if books.snapshots:
            self.tables["book_snapshots"].append(book_snapshots_table(books.snapshots, SOURCE))
        if books.resyncs:
            recv_ms = rows.recv_ns // 1_000_000
            table = book_resyncs_table(books.resyncs, recv_ms, self.session_id, SOURCE)
            self.tables["book_resyncs"].append(table)
            for r in books.resyncs:
                if r.first:  # one line per episode; the rest are counted
                    log.warning("order book %s out of sync (%s): %s", r.symbol, r.reason, r.detail)
