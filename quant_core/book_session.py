"""Order books in a session log: what the live job records for its books, and the replay of
those records to the same ``book_snapshots`` (no I/O).

The live job (``quant_resources.live.books``) records, in the order it feeds ``DepthBooks``:

* a ``conn`` record with meta ``{"event": "books", "depth", "interval_ms", "limit"}`` before
  any frame: the book settings, so a replay takes the same snapshots;
* the depth frames, as the ``ws`` records they are (``is_depth_frame`` tells them apart);
* a ``conn`` record ``{"event": "depth_connect"}`` at every (re)connect of the stream;
* every ``/api/v3/depth`` answer as a ``rest`` record with meta ``path``, ``params``,
  ``symbol`` and ``request_id`` (the ``SnapshotRequest`` it answers).

A third-party capture records depth frames and REST answers but no request ids and no settings:
its answers are taken for the request pending when they come, with the default settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from quant_core.book_tables import book_snapshots_table
from quant_core.depth_decode import DEPTH_PATH
from quant_core.depth_sync import DEPTH_SNAPSHOT_LIMIT, BookSnapshot, DepthBooks

BOOKS_EVENT = "books"
DEPTH_CONNECT = "depth_connect"
DEFAULT_DEPTH = 20
DEFAULT_INTERVAL_MS = 1000
DEPTH_STREAM_KINDS = ("depth", "depth1s")  # our stream names (depth@100ms and depth on the wire)


def has_depth(streams: Sequence[str]) -> bool:
    """Whether a configuration or session header subscribes to depth (either name form)."""
    return any(s.rsplit("@", 1)[-1] in DEPTH_STREAM_KINDS or "@depth" in s for s in streams)


def is_depth_frame(raw: bytes) -> bool:
    """A combined-stream depth frame (``{"stream":"<symbol>@depth...``): the stream name sits in
    the first bytes of every frame Binance sends."""
    return b"@depth" in bytes(raw[:64])


def captured_snapshot_meta(payload: bytes, streams: Sequence[str]) -> dict[str, Any] | None:
    """The ``rest`` record meta for a third-party capture's line that is a ``/api/v3/depth``
    answer (a bare ``{"lastUpdateId": ...}`` object), or None for any other line. The answer
    names no symbol: it is the capture's only depth symbol's (with several, None: not used)."""
    if not bytes(payload[:20]).lstrip().startswith(b'{"lastUpdateId"'):
        return None
    symbols = {s.split("@", 1)[0].upper() for s in streams if "@depth" in s}
    if len(symbols) != 1:
        return None
    return {"path": DEPTH_PATH, "symbol": symbols.pop(), "origin": "capture"}


def books_meta(depth: int, interval_ms: int, limit: int) -> dict[str, Any]:
    return {"event": BOOKS_EVENT, "depth": depth, "interval_ms": interval_ms, "limit": limit}


def snapshot_meta(symbol: str, request_id: int, params: dict) -> dict[str, Any]:
    return {"path": DEPTH_PATH, "params": params, "symbol": symbol, "request_id": request_id}


class BookReplay:
    """Feeds recorded records to ``DepthBooks`` the way the live job did and keeps every
    snapshot. Call ``on_conn`` / ``take_frames`` / ``on_rest`` in record order; each returns
    whether the record (or which frames) were the books'."""

    def __init__(self, symbols: Sequence[str], source: str = "binance") -> None:
        self.symbols = list(symbols)
        self.source = source
        self.books: DepthBooks | None = None
        self.snapshots: list[BookSnapshot] = []
        self.counts = {"book_updates": 0, "book_snapshots": 0, "book_resyncs": 0}

    def _books(self) -> DepthBooks:
        if self.books is None:  # a capture without settings: the live job's defaults
            self.configure(DEFAULT_DEPTH, DEFAULT_INTERVAL_MS, DEPTH_SNAPSHOT_LIMIT)
        return self.books

    def configure(self, depth: int, interval_ms: int, limit: int) -> None:
        self.books = DepthBooks(self.symbols, depth=depth, interval_ms=interval_ms, limit=limit)

    def on_conn(self, meta: dict[str, Any]) -> bool:
        event = meta.get("event")
        if event == BOOKS_EVENT:
            self.configure(meta["depth"], meta["interval_ms"], meta["limit"])
        elif event == DEPTH_CONNECT:
            self._feed(("connect",))
        else:
            return False
        return True

    def take_frames(self, payloads: list[bytes]) -> list[bytes]:
        """Feed the depth frames of a run of consecutive ws records; return the others."""
        # kperf: one scan of the run instead of a call per frame (the common run has no depth).
        if b"@depth" not in b"\n".join(payloads):
            return payloads
        depth = [p for p in payloads if is_depth_frame(p)]
        if not depth:
            return payloads
        self._feed(("frames", depth))
        return [p for p in payloads if not is_depth_frame(p)]

    def on_rest(self, payload: bytes, meta: dict[str, Any]) -> bool:
        if meta.get("path") != DEPTH_PATH or not isinstance(meta.get("symbol"), str):
            return False
        self._feed(("snapshot", meta["symbol"], meta.get("request_id"), payload))
        return True

    def _feed(self, item: tuple) -> None:
        books = self._books()
        books.feed(item)
        out = books.take()
        self.snapshots.extend(out.snapshots)
        self.counts["book_updates"] += len(out.updates["price"])
        self.counts["book_snapshots"] += len(out.snapshots)
        self.counts["book_resyncs"] += len(out.resyncs)

    def table(self) -> pa.Table:
        return book_snapshots_table(self.snapshots, self.source)
