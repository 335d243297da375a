"""The ingest kernel's order books: depth frames, REST depth answers and connection records in
log order -> book updates, snapshots, resyncs and snapshot requests (no I/O).

``IngestKernel`` owns one :class:`KernelBooks` when its streams include depth and routes to it:
the depth frames of a burst (``frames``), ``/api/v3/depth`` answers (``rest``) and the book
records among the connection records (``conn``). The state machine is ``depth_sync.DepthBooks``
(Binance's procedure); this module decides what a recorded input means to it and turns what it
produced into the kernel's output, so the live driver and the replay driver get the same book
rows from the same records by construction. What is recorded, and in which order:

* a ``conn`` record ``{"event": "books", "depth", "interval_ms", "limit"}`` before any frame:
  the book settings (``settings_meta``), so a replay takes the same snapshots;
* the depth frames, as the ``ws`` records they are (``is_depth_frame`` tells them apart);
* a ``conn`` record ``{"event": "depth_connect"}`` at every (re)connect after which frames may
  be missing: every book starts over;
* every ``/api/v3/depth`` answer as a ``rest`` record with meta ``path``, ``params``, ``symbol``
  and ``request_id`` (the ``SnapshotRequest`` it answers). A third-party capture's answers carry
  no request id: each answers the request pending for its symbol.

Time in sync is counted in exchange time (the diffs' ``E``), so it replays identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quant_core.book_session import (
    BOOKS_EVENT,
    DEFAULT_DEPTH,
    DEFAULT_INTERVAL_MS,
    DEPTH_CONNECT,
    books_meta,
    is_depth_frame,
)
from quant_core.depth_decode import DEPTH_PATH
from quant_core.depth_sync import DEPTH_SNAPSHOT_LIMIT, IN_SYNC, BookOutput, DepthBooks

COUNTS = ("updates", "snapshots", "resyncs", "snapshot_requests")


@dataclass
class BookRows:
    """What the books produced for one kernel call. ``output`` is ``DepthBooks``' own (update
    columns with symbol codes into ``output.symbols``; ``frame`` rewritten to the position in
    the batch of frames passed to the kernel, -1 for diffs applied from a buffer); ``ts_init``
    the receive time (ns) of each update row; ``recv_ns`` the receive time of the input that
    produced them (the time of a resync no diff dated)."""

    output: BookOutput
    ts_init: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    recv_ns: int = 0

    def __bool__(self) -> bool:
        out = self.output
        return bool(len(out.updates["price"]) or out.snapshots or out.resyncs or out.requests)


class KernelBooks:
    """The books of one kernel (module docstring). Not thread-safe, like the kernel."""

    def __init__(
        self,
        symbols: Sequence[str],
        depth: int = DEFAULT_DEPTH,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        limit: int = DEPTH_SNAPSHOT_LIMIT,
    ) -> None:
        self.symbols = list(symbols)
        self.counts: dict[str, Any] = {
            **dict.fromkeys(COUNTS, 0),
            "faults": {},
            "rejects": {},
            "snapshot_rejects": {},
            "in_sync_s": 0.0,
        }
        self.configure(depth, interval_ms, limit)

    def configure(self, depth: int, interval_ms: int, limit: int) -> None:
        """New settings (the live job's ``books`` record, before any frame)."""
        self.books = DepthBooks(self.symbols, depth=depth, interval_ms=interval_ms, limit=limit)
        self.settings = books_meta(depth, interval_ms, limit)
        self._in_sync_ms = 0
        self._since: dict[str, int] = {}  # symbol -> exchange ms its book came in sync

    # -- inputs (called by the kernel, in log order) ---------------------------------------
    def split(self, payloads: list[bytes]) -> tuple[list[int], list[int]]:
        """Positions of the depth frames and of the others in a burst."""
        depth, other = [], []
        for i, p in enumerate(payloads):
            (depth if is_depth_frame(p) else other).append(i)
        return depth, other

    def frames(self, payloads: list[bytes], at: list[int], recv_ns: np.ndarray) -> BookRows:
        """The depth frames at positions ``at`` of a burst whose receive times are ``recv_ns``
        (zeros when unknown)."""
        self.books.on_frames([payloads[i] for i in at])
        positions = np.asarray(at, dtype=np.int64)
        return self._take(int(recv_ns[positions[-1]]), positions, recv_ns)

    def snapshot(self, symbol: str, request_id: int | None, body: bytes, recv_ns: int) -> BookRows:
        """A ``/api/v3/depth`` answer (``request_id`` None: a capture's, for the pending one)."""
        self.books.on_snapshot(symbol, request_id, body)
        return self._take(recv_ns)

    def conn(self, meta: dict[str, Any], recv_ns: int = 0) -> BookRows | None:
        """A book ``conn`` record, or None when ``meta`` is not one."""
        event = meta.get("event")
        if event == BOOKS_EVENT:
            self.configure(meta["depth"], meta["interval_ms"], meta["limit"])
        elif event == DEPTH_CONNECT:
            self.books.on_connect()
        else:
            return None
        return self._take(recv_ns)

    @staticmethod
    def restart_meta() -> dict[str, Any]:
        return {"event": DEPTH_CONNECT}

    @staticmethod
    def is_answer(path: str) -> bool:
        return path == DEPTH_PATH

    # -- output ----------------------------------------------------------------------------
    def _take(
        self, recv_ns: int, positions: np.ndarray | None = None, recv: np.ndarray | None = None
    ) -> BookRows:
        out = self.books.take()
        updates = out.updates
        n = len(updates["price"])
        ts_init = np.full(n, recv_ns, dtype=np.int64)
        if n and positions is not None:
            frame = updates["frame"]
            inside = frame >= 0
            frame[inside] = positions[frame[inside]]  # a position in the kernel's batch
            ts_init[inside] = recv[frame[inside]]
        counts = self.counts
        counts["updates"] += n
        counts["snapshots"] += len(out.snapshots)
        counts["resyncs"] += len(out.resyncs)
        counts["snapshot_requests"] += len(out.requests)
        books = self.books
        counts["faults"] = dict(books.faults)
        counts["rejects"] = dict(books.decoder.rejects)
        counts["snapshot_rejects"] = dict(books.snapshot_rejects)
        self._track()
        return BookRows(out, ts_init, recv_ns)

    def _track(self) -> None:
        """Time in sync in exchange time: from the diff a book came in sync at to the diff that
        put it out of sync (or the last diff seen, while it still is)."""
        since = self._since
        for symbol, st in self.books.states.items():
            start = since.get(symbol)
            if st.state == IN_SYNC:
                if start is None and st.last_ts is not None:
                    since[symbol] = st.last_ts
            elif start is not None:
                if st.last_ts is not None:
                    self._in_sync_ms += max(0, st.last_ts - start)
                del since[symbol]
        open_ms = sum(
            max(0, self.books.states[s].last_ts - t)
            for s, t in since.items()
            if self.books.states[s].last_ts is not None
        )
        self.counts["in_sync_s"] = (self._in_sync_ms + open_ms) / 1000
