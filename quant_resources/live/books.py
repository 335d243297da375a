"""Order books on the live path: depth frames -> ``DepthBooks`` -> ``book_updates``,
``book_snapshots`` and ``book_resyncs`` in ClickHouse and snapshots on NATS
``v1.market.book.binance.{symbol}``.

The pipeline hands over its depth frames after it logged them (write-ahead, like trades), every
(re)connect of the stream, and the REST depth answers, which travel through the pipeline's
queue like gap-repair pages so they are applied (and logged) in queue order. What is recorded
and in which order is ``quant_core.book_session``'s contract, so a replay takes the same
snapshots. Snapshot requests are fetched with the pipeline's ``BinanceRest``: the same weight
budget as gap repair (``limit=5000`` costs 250); a newer request of a symbol cancels the one
still waiting. ``BookSink`` stages the rows and messages and sends only what the pipeline's
write-ahead gate released (``quant_resources.live.sinks`` explains the two stages).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa

from quant_core.book_session import (
    DEPTH_CONNECT,
    books_meta,
    has_depth,
    is_depth_frame,
    snapshot_meta,
)
from quant_core.book_tables import book_resyncs_table, book_snapshots_table, book_updates_table
from quant_core.depth_decode import DEPTH_PATH
from quant_core.depth_sync import (
    DEPTH_SNAPSHOT_LIMIT,
    IN_SYNC,
    BookOutput,
    BookSnapshot,
    DepthBooks,
    SnapshotRequest,
)
from quant_resources.live.sinks import WarehouseSink

log = logging.getLogger(__name__)
SOURCE = "binance"
BOOK_TABLES = ("book_updates", "book_snapshots", "book_resyncs")
RETRY_S = 1.0


@dataclass
class DepthAnswer:
    """A ``/api/v3/depth`` answer on its way through the pipeline's queue."""

    symbol: str
    request_id: int
    params: dict
    body: bytes
    recv_ns: int


class LiveBooks:
    """The books of one live session; the pipeline calls ``start`` once the session log is
    open, ``on_frames`` / ``on_connection`` / ``on_answer`` as things happen, ``flush`` and
    ``close``. ``counts`` is the session's book summary (kept current while it runs)."""

    def __init__(
        self,
        symbols: list[str],
        rest,
        queue: asyncio.Queue,
        warehouse,
        session_id: str,
        depth: int = 20,
        interval_ms: int = 1000,
        limit: int = DEPTH_SNAPSHOT_LIMIT,
        flush_rows: int = 5000,
        flush_seconds: float = 1.0,
    ) -> None:
        self.books = DepthBooks(symbols, depth=depth, interval_ms=interval_ms, limit=limit)
        self.settings = books_meta(depth, interval_ms, limit)
        self.rest, self.queue = rest, queue
        self.session_id = session_id
        self.sink = BookSink(warehouse, session_id, flush_rows, flush_seconds)
        self.log = None
        self._fetches: dict[str, asyncio.Task] = {}
        self._in_sync_since: dict[str, float] = {}
        self._in_sync_s = 0.0
        self._handover = False
        self.counts: dict = {
            "updates": 0,
            "snapshots": 0,
            "resyncs": 0,
            "snapshot_requests": 0,
            "faults": {},
            "rejects": {},
            "snapshot_rejects": {},
            "in_sync_s": 0.0,
        }

    @classmethod
    def for_pipeline(cls, pipeline) -> LiveBooks | None:
        """The books of a ``LivePipeline`` whose streams include depth, else None."""
        cfg = pipeline.config
        if not has_depth(cfg.streams):
            return None
        return cls(
            cfg.symbols,
            pipeline.rest,
            pipeline.queue,
            pipeline.warehouse,
            cfg.session_id,
            depth=cfg.book_depth,
            interval_ms=cfg.book_interval_ms,
            flush_rows=cfg.flush_rows,
            flush_seconds=cfg.flush_seconds,
        )

    # -- inputs (all on the pipeline's event loop, in the order they are logged) ------------
    def start(self, session_log, nats=None) -> None:
        """Record the book settings first: a replay takes the same snapshots."""
        self.log = session_log
        self.sink.nats = nats
        session_log.append("conn", 0, time.time_ns(), b"", self.settings)

    def on_frames(self, frames: list) -> list:
        """Feed the depth frames of a logged burst; return the other frames."""
        depth = [f for f in frames if is_depth_frame(f.data)]
        if not depth:
            return frames
        self.books.on_frames([f.data for f in depth])
        recv = np.fromiter((f.recv_ns for f in depth), np.int64, len(depth))
        self._emit(recv, depth[-1].recv_ns)
        return [f for f in frames if not is_depth_frame(f.data)]

    def on_connection(self, kind: str, detail: str) -> None:
        """A new connection ("open") after a drop: frames may be missing since the last one,
        so every book starts over (recorded first). A handover's old connection streams until
        the new one delivers: nothing is missed, the books go on."""
        if kind == "replace":
            self._handover = detail in ("aged", "shutdown")
        if kind != "open" or self.log is None or self._handover:
            self._handover = False if kind == "open" else self._handover
            return
        now = time.time_ns()
        self.log.append("conn", 0, now, b"", {"event": DEPTH_CONNECT})
        self.books.on_connect()
        self._emit(None, now)

    def owns(self, item) -> bool:
        return isinstance(item, DepthAnswer)

    def on_answer(self, item: DepthAnswer) -> None:
        """A REST answer taken from the queue: logged, then applied."""
        meta = snapshot_meta(item.symbol, item.request_id, item.params)
        self.log.append("rest", 0, item.recv_ns, item.body, meta)
        self.books.on_snapshot(item.symbol, item.request_id, item.body)
        self._emit(None, item.recv_ns)

    # -- outputs ----------------------------------------------------------------------------
    def _emit(self, recv: np.ndarray | None, recv_ns: int) -> None:
        out = self.books.take()
        counts = self.counts
        n = len(out.updates["price"])
        if n:
            frame = out.updates["frame"]
            at = np.full(n, recv_ns, dtype=np.int64)
            if recv is not None:  # rows of this burst's diffs: their frame's receive time
                inside = frame >= 0
                at[inside] = recv[frame[inside]]
            table = book_updates_table(out.symbols, out.updates, at, SOURCE)
            self.sink.add("book_updates", table)
            counts["updates"] += n
        if out.snapshots:
            self.sink.add("book_snapshots", book_snapshots_table(out.snapshots, SOURCE))
            for snap in out.snapshots:
                self.sink.publish(snap)
            counts["snapshots"] += len(out.snapshots)
        if out.resyncs:
            table = book_resyncs_table(out.resyncs, recv_ns // 1_000_000, self.session_id, SOURCE)
            self.sink.add("book_resyncs", table)
            counts["resyncs"] += len(out.resyncs)
            for r in out.resyncs:
                if r.first:  # one line per episode; the rest are counted
                    log.warning("order book %s out of sync (%s): %s", r.symbol, r.reason, r.detail)
        for request in out.requests:
            self._fetch(request)
        self._track(out)

    def _track(self, out: BookOutput) -> None:
        now = time.monotonic()
        for symbol, st in self.books.states.items():
            since = self._in_sync_since.get(symbol)
            if st.state == IN_SYNC and since is None:
                self._in_sync_since[symbol] = now
            elif st.state != IN_SYNC and since is not None:
                self._in_sync_s += now - since
                del self._in_sync_since[symbol]
        books, counts = self.books, self.counts
        counts["faults"] = dict(books.faults)
        counts["rejects"] = dict(books.decoder.rejects)
        counts["snapshot_rejects"] = dict(books.snapshot_rejects)
        counts["in_sync_s"] = self.time_in_sync(now)

    def time_in_sync(self, now: float | None = None) -> float:
        """Seconds the books were in sync, summed over symbols."""
        now = time.monotonic() if now is None else now
        return round(self._in_sync_s + sum(now - t for t in self._in_sync_since.values()), 3)

    # -- snapshot requests -------------------------------------------------------------------
    def _fetch(self, request: SnapshotRequest) -> None:
        old = self._fetches.get(request.symbol)
        if old is not None and not old.done():
            old.cancel()  # superseded: its answer would be ignored anyway
        self.counts["snapshot_requests"] += 1
        self._fetches[request.symbol] = asyncio.get_running_loop().create_task(
            self._fetch_task(request), name=f"depth-{request.symbol}"
        )

    async def _fetch_task(self, request: SnapshotRequest) -> None:
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
        await self.queue.put(
            DepthAnswer(request.symbol, request.request_id, params, answer.body, time.time_ns())
        )

    # -- sink ------------------------------------------------------------------------------
    async def flush(self) -> None:
        await self.sink.flush()

    async def close(self, timeout_s: float = 120) -> bool:
        """Stop fetching; send everything released. False if ClickHouse kept refusing."""
        for task in self._fetches.values():
            task.cancel()
        await asyncio.gather(*self._fetches.values(), return_exceptions=True)
        self.counts["in_sync_s"] = self.time_in_sync()
        drained = await self.sink.drain(timeout_s)
        self.counts["rows_written"] = dict(self.sink.rows_written)
        self.counts["nats_published"] = self.sink.published
        return drained


@dataclass
class BookSink(WarehouseSink):
    """The warehouse sink's batches, dedup tokens, retries and write-ahead release, for the
    three book tables, plus snapshot messages published on the pipeline's NATS connection
    (best effort, as the other NATS messages) once released. ``LiveBooks`` adds the rows
    (``add``); the kernel's columns carry none (``stage`` ignores them)."""

    tables: dict[str, list[pa.Table]] = field(
        default_factory=lambda: {table: [] for table in BOOK_TABLES}
    )
    rows_written: dict = field(default_factory=lambda: dict.fromkeys(BOOK_TABLES, 0))
    nats: object = None  # the pipeline's NatsSink, whose connection publishes
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    ready: list[tuple[str, bytes]] = field(default_factory=list)
    published: int = 0
    dropped: int = 0

    def stage(self, out) -> None:
        pass  # the kernel's columns carry no book rows: ``LiveBooks`` adds them with ``add``

    def add(self, table: str, data: pa.Table) -> None:
        self.tables[table].append(data)

    def publish(self, snap: BookSnapshot) -> None:
        if self.nats is not None:
            self.messages.append((f"v1.market.book.binance.{snap.symbol}", snapshot_json(snap)))

    def due(self, force: bool = False) -> bool:
        return bool(self.messages) or super().due(force)

    def release(self) -> None:
        self.ready.extend(self.messages)
        self.messages = []
        super().release()

    async def flush(self) -> None:
        await self._publish()
        await super().flush()

    async def _publish(self) -> None:
        nc = getattr(self.nats, "nc", None)
        if nc is None or not self.ready:
            return
        from nats.errors import Error as NatsError

        batch, self.ready = self.ready, []
        for subject, payload in batch:
            try:
                await nc.publish(subject, payload)
            except NatsError:
                self.dropped += 1
                continue
            self.published += 1

    def stats(self) -> dict[str, int]:
        return {**self.rows_written, "published": self.published, "dropped": self.dropped}


def _dec(units: int) -> str:
    whole, frac = divmod(units, 10**8)
    return f"{whole}.{frac:08d}".rstrip("0").rstrip(".")


def _iso_ms(ms: int) -> str:
    second, milli = divmod(ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))}.{milli:03d}Z"


def snapshot_json(snap: BookSnapshot) -> bytes:
    """A snapshot as the ``BookSnapshot`` contract's JSON (``quant_core.contracts``)."""
    return orjson.dumps(
        {
            "source": SOURCE,
            "symbol": snap.symbol,
            "ts_event": _iso_ms(snap.ts_event),
            "update_id": snap.update_id,
            "synced_from": snap.synced_from,
            "bids": [
                {"price": _dec(p), "qty": _dec(q)}
                for p, q in zip(snap.bid_price, snap.bid_qty, strict=True)
            ],
            "asks": [
                {"price": _dec(p), "qty": _dec(q)}
                for p, q in zip(snap.ask_price, snap.ask_qty, strict=True)
            ],
            "bids_complete": snap.bids_known,  # see the contract's docstring
            "asks_complete": snap.asks_known,
        }
    )
