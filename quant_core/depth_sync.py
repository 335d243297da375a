"""Local order books kept exactly in sync with Binance spot depth diffs (no I/O).

Binance's procedure (spot, as corrected in its 2025-11 changelog): subscribe
``<symbol>@depth@100ms``; buffer diffs and note the first ``U``; fetch ``GET /api/v3/depth``
(``limit=5000``, weight 250); if its ``lastUpdateId`` is below that first ``U``, fetch again;
drop buffered diffs with ``u <= lastUpdateId`` and apply the rest in order (quantity 0 removes a
level); a diff whose ``U`` is not the previous ``u + 1`` means events were missed: the book is
out of sync and is rebuilt from a new snapshot.

``DepthBooks`` is that procedure for many symbols, driven only by recorded inputs: burst of
raw depth frames (``on_frames``), REST answers (``on_snapshot``, tagged with the request id
it answers) and connection (re)starts (``on_connect``). The live driver and the replay driver
feed it the same inputs in the same order and get the same :class:`BookOutput`: rows of
applied level changes (the future ``book_updates`` table), top-N snapshots (every
``interval_ms`` of exchange time and right after every (re)sync, only while in sync), resync
records, sync points, and :class:`SnapshotRequest` s the driver turns into REST calls (keeping
to the weight budget is the driver's job; ``DEPTH_SNAPSHOT_WEIGHT`` is the cost of one).

Per symbol: ``buffering`` (connected, no diff yet) -> the first diff is buffered and a snapshot
requested: ``waiting_for_snapshot`` -> a usable answer: ``in_sync``. A gap, a crossed or locked
book after a diff, or an unusable answer leaves ``in_sync``: the book is cleared and a new
snapshot requested as soon as a diff is buffered (``out_of_sync`` until then). A diff with
``u`` at or below the last applied id repeats what the book holds and is skipped (counted).

Every record carries ``row``: how many level-change rows this ``DepthBooks`` had emitted
before it, which orders records and rows in one sequence (the rebuild test uses it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np

from quant_core.book import OrderBook
from quant_core.depth_decode import (
    DepthBatch,
    DepthDecoder,
    DepthSnapshotError,
    decode_depth_snapshot,
)

DEPTH_SNAPSHOT_LIMIT = 5000
DEPTH_SNAPSHOT_WEIGHT = 250  # request weight of GET /api/v3/depth with limit 1001..5000
MAX_BUFFERED_DIFFS = 20_000  # per symbol while waiting for a snapshot; the oldest go first

BUFFERING = "buffering"
WAITING = "waiting_for_snapshot"
IN_SYNC = "in_sync"
OUT_OF_SYNC = "out_of_sync"

# Why a book left sync (or a snapshot answer was not used).
GAP = "gap"
CROSSED = "crossed"
RESTART = "restart"
BAD_SNAPSHOT = "bad_snapshot"
STALE_SNAPSHOT = "stale_snapshot"  # lastUpdateId below the first buffered U: fetched again

_NEVER = 2**63 - 1


def depth_weight(limit: int) -> int:
    """Request weight of ``GET /api/v3/depth`` for ``limit`` (Binance's table)."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return DEPTH_SNAPSHOT_WEIGHT


class SnapshotRequest(msgspec.Struct, frozen=True):
    """Fetch ``GET /api/v3/depth?symbol=S&limit=L`` and hand the body to ``on_snapshot`` with
    this ``request_id``."""

    symbol: str
    request_id: int
    limit: int
    weight: int
    row: int


class BookSnapshot(msgspec.Struct, frozen=True):
    """Top ``N`` of a book in sync. ``ts_event`` is the interval boundary (exchange ms) the
    book stood at, or for the snapshot right after a (re)sync the time of the last diff seen;
    ``update_id`` the last ``u`` applied (the REST id if none was); ``bids_known`` /
    ``asks_known`` say whether every returned level lies inside the range a REST snapshot
    covered (beyond it, levels are unknown until a diff changes them)."""

    symbol: str
    ts_event: int
    update_id: int
    synced_from: int
    bid_price: tuple[int, ...]
    bid_qty: tuple[int, ...]
    ask_price: tuple[int, ...]
    ask_qty: tuple[int, ...]
    bids_known: bool
    asks_known: bool
    row: int


class Resync(msgspec.Struct, frozen=True):
    """A book left sync (or a snapshot answer was refused). ``update_id`` is the last id the
    book held, ``next_update_id`` the id that showed the fault (the gap's ``U``, the crossing
    diff's ``u``, the refused snapshot's ``lastUpdateId``), None when none did. ``first`` is
    True for the first record of an episode (since the book was last in sync and sound): a
    driver logs those and counts the rest."""

    symbol: str
    reason: str
    ts_event: int | None
    update_id: int | None
    next_update_id: int | None
    detail: str
    first: bool
    row: int


class Synced(msgspec.Struct, frozen=True):
    """A REST snapshot became the book: the rows from ``row`` on apply on top of it."""

    symbol: str
    request_id: int
    synced_from: int
    dropped: int  # buffered diffs already covered by the snapshot
    row: int


@dataclass
class BookOutput:
    """What ``DepthBooks`` produced since the last ``take``. ``updates`` holds the applied
    level changes as columns (the ``book_updates`` rows): ``symbol`` (codes into ``symbols``),
    ``first_update_id``, ``last_update_id``, ``ts_event`` (``E``), ``side`` (0 bid, 1 ask),
    ``price``, ``qty`` and ``frame``: the diff's index in the burst of frames it came in, -1
    for diffs applied from the buffer when a snapshot answer synced the book."""

    symbols: list[str]
    updates: dict[str, np.ndarray]
    snapshots: list[BookSnapshot]
    resyncs: list[Resync]
    synced: list[Synced]
    requests: list[SnapshotRequest]


@dataclass
class _Symbol:
    symbol: str
    code: int
    book: OrderBook = field(default_factory=OrderBook)
    state: str = BUFFERING
    buffer: list[tuple] = field(default_factory=list)
    last_id: int | None = None  # last u applied (or the REST lastUpdateId)
    synced_from: int | None = None
    requests: int = 0
    pending: int | None = None  # the request id whose answer we wait for
    next_due: int = _NEVER  # exchange ms of the next interval snapshot
    last_ts: int | None = None
    episode: bool = False  # a fault was recorded and no sound snapshot emitted since


class DepthBooks:
    """Order books for ``symbols`` (see the module doc). ``depth`` levels a side per
    snapshot, one every ``interval_ms`` of exchange time; REST snapshots of ``limit`` levels.
    Counters: ``decoder.rejects`` (bad frames by kind), ``snapshot_rejects`` (bad REST
    answers by kind), ``faults`` (by reason), ``skipped_diffs``, ``ignored_answers``,
    ``overflowed_diffs``."""

    def __init__(
        self,
        symbols: Iterable[str],
        depth: int = 20,
        interval_ms: int = 1000,
        limit: int = DEPTH_SNAPSHOT_LIMIT,
    ) -> None:
        if depth < 1 or interval_ms < 1 or limit < 1:
            raise ValueError(f"depth={depth}, interval_ms={interval_ms}, limit={limit}: >= 1")
        self.depth, self.interval_ms, self.limit = depth, interval_ms, limit
        self.decoder = DepthDecoder(list(symbols))
        self.states: dict[str, _Symbol] = {}
        for symbol in sorted(self.decoder.allowed or ()):
            self.states[symbol] = _Symbol(symbol, self.decoder.code(symbol))
        self._by_code = [self.states[s] for s in self.decoder.names]
        self.snapshot_rejects: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.skipped_diffs = 0
        self.ignored_answers = 0
        self.overflowed_diffs = 0
        self.rows = 0
        self._reset_output()

    # -- inputs --------------------------------------------------------------------------
    def on_frames(self, frames: Sequence[bytes]) -> None:
        """A burst of raw depth frames, in arrival order."""
        self.on_batch(self.decoder.decode(frames))

    def on_batch(self, batch: DepthBatch) -> None:
        if not len(batch):
            return
        codes = batch.code.tolist()
        first, last, ts = batch.first.tolist(), batch.last.tolist(), batch.ts.tolist()
        start, mid = batch.start.tolist(), batch.mid.tolist()
        # The int64 columns the book reads in place.
        cols = (batch.price, batch.qty, batch.start, batch.mid, batch.first, batch.last, batch.ts)
        cols += (batch.code.astype(np.int64),)
        by_code, on_diff, interval = self._by_code, self._on_diff, self.interval_ms
        applied: list[int] = []
        i, n = 0, len(codes)
        while i < n:
            code = codes[i]
            st = by_code[code]
            f, u, t = first[i], last[i], ts[i]
            if st.state == IN_SYNC and u > st.last_id >= f - 1:
                # The common case: in sync, the next ids (a snapshot due first is taken here,
                # as ``_on_diff`` would).
                if t >= st.next_due:
                    self._snapshot(st, t - t % interval)
                if st.book.__class__ is OrderBook:
                    # One C call: the diffs from i on that follow the book, up to the next
                    # snapshot due (or a crossed book); at least diff i.
                    stop, last_id, last_ts, levels, crossed = st.book.apply_run(
                        cols, i, code, st.last_id, st.next_due
                    )
                    st.last_id, st.last_ts = last_id, last_ts
                    self.rows += levels
                    applied.extend(range(i, stop))
                    i = stop
                    if crossed:
                        self._crossed(st, last_id)
                    continue
                # A book with OrderBook's interface (the tests' reference dict book).
                st.last_ts, st.last_id = t, u
                s, m, e = start[i], mid[i], start[i + 1]
                self.rows += e - s
                if _apply_sides(st.book, batch.price, batch.qty, s, m, e):
                    self._crossed(st, u)
                applied.append(i)
            else:
                s, m, e = start[i], mid[i], start[i + 1]
                price, qty = batch.price, batch.qty
                bp, bq = price[s:m].tolist(), qty[s:m].tolist()
                diff = (f, u, t, bp, bq, price[m:e].tolist(), qty[m:e].tolist())
                if on_diff(st, diff):
                    applied.append(i)
            i += 1
        # The rows of a burst are taken from its columns in one go, not diff by diff.
        if applied:
            self.applied.append((batch, applied))

    def on_snapshot(self, symbol: str, request_id: int | None, body: bytes) -> None:
        """The REST answer to ``SnapshotRequest`` ``request_id`` (bytes as received). None
        answers whatever request is pending: a third-party capture records the answer without
        the request it belonged to."""
        st = self.states.get(symbol.upper())
        if st is not None and request_id is None:
            request_id = st.pending
        if st is None or request_id is None or st.pending != request_id or st.state != WAITING:
            self.ignored_answers += 1  # answers a request made before a restart or resync
            return
        st.pending = None
        try:
            snap = decode_depth_snapshot(body)
        except DepthSnapshotError as exc:
            self.snapshot_rejects[exc.kind] = self.snapshot_rejects.get(exc.kind, 0) + 1
            self._record(st, BAD_SNAPSHOT, None, str(exc))
            self._request(st)
            return
        first_u = st.buffer[0][0]
        if snap.last_update_id < first_u:
            self._record(
                st,
                STALE_SNAPSHOT,
                snap.last_update_id,
                f"lastUpdateId {snap.last_update_id} < first buffered U {first_u}",
            )
            self._request(st)
            return
        buffered = st.buffer
        kept = [d for d in buffered if d[1] > snap.last_update_id]
        st.buffer = []
        st.book.load(snap.bid_price, snap.bid_qty, snap.ask_price, snap.ask_qty, self.limit)
        st.state, st.last_id, st.synced_from = IN_SYNC, snap.last_update_id, snap.last_update_id
        self.synced.append(
            Synced(st.symbol, request_id, snap.last_update_id, len(buffered) - len(kept), self.rows)
        )
        st.next_due = _NEVER  # boundaries inside the buffered diffs: the sync snapshot covers
        applied = [(st.code, diff) for diff in kept if self._on_diff(st, diff)]
        if applied:
            self.applied.append((None, applied))
        if st.state == IN_SYNC:
            self._snapshot(st, st.last_ts)

    def on_connect(self) -> None:
        """The stream (re)connected: every book starts over from its first new diff."""
        for st in self.states.values():
            if st.state != BUFFERING or st.buffer:
                self._record(st, RESTART, None, "stream reconnected")
            st.state, st.buffer, st.pending = BUFFERING, [], None
            st.book.clear()
            st.next_due = _NEVER

    def feed(self, item: tuple) -> None:
        """One recorded input: ``("connect",)``, ``("frames", [raw, ...])`` or
        ``("snapshot", symbol, request_id, body)``; what live and replay drivers record."""
        kind = item[0]
        if kind == "frames":
            self.on_frames(item[1])
        elif kind == "snapshot":
            self.on_snapshot(item[1], item[2], item[3])
        elif kind == "connect":
            self.on_connect()
        else:
            raise ValueError(f"unknown depth input kind {kind!r} (frames, snapshot, connect)")

    def take(self) -> BookOutput:
        """Everything produced since the last call (the driver writes it, then calls again)."""
        out = BookOutput(
            list(self.decoder.names),
            self._update_columns(),
            self.snapshots,
            self.resyncs,
            self.synced,
            self.requests,
        )
        self._reset_output()
        return out

    # -- the state machine ---------------------------------------------------------------
    def _on_diff(self, st: _Symbol, diff: tuple) -> bool:
        """Apply (True: its rows are emitted), skip or buffer one diff."""
        first, last, ts = diff[0], diff[1], diff[2]
        st.last_ts = ts
        if st.state == IN_SYNC:
            if last <= st.last_id:
                self.skipped_diffs += 1
                return False
            if first > st.last_id + 1:
                self._record(st, GAP, first, f"U {first} after u {st.last_id}")
                self._buffer(st, diff)
                return False
            if ts >= st.next_due:
                self._snapshot(st, ts - ts % self.interval_ms)
            return self._apply(st, last, *diff[3:])
        self._buffer(st, diff)
        return False

    def _apply(self, st: _Symbol, last: int, bp: list, bq: list, ap: list, aq: list) -> bool:
        """Apply a diff that follows the book's last id (True: its rows are emitted); a
        crossed or locked book after it is a fault."""
        book = st.book
        book.bids.apply(bp, bq)
        book.asks.apply(ap, aq)
        st.last_id = last
        self.rows += len(bp) + len(ap)
        if book.crossed():
            self._crossed(st, last)
        return True

    def _crossed(self, st: _Symbol, last: int) -> None:
        best = (st.book.bids.best(), st.book.asks.best())
        self._record(st, CROSSED, last, f"best bid {best[0]} >= best ask {best[1]}")

    def _buffer(self, st: _Symbol, diff: tuple) -> None:
        st.buffer.append(diff)
        if len(st.buffer) > MAX_BUFFERED_DIFFS:
            del st.buffer[0]
            self.overflowed_diffs += 1
        if st.pending is None:
            self._request(st)

    def _request(self, st: _Symbol) -> None:
        st.requests += 1
        st.pending = st.requests
        st.state = WAITING
        self.requests.append(
            SnapshotRequest(st.symbol, st.requests, self.limit, depth_weight(self.limit), self.rows)
        )

    def _record(self, st: _Symbol, reason: str, next_id: int | None, detail: str) -> None:
        """A resync (or refused answer): the book is dropped until a snapshot rebuilds it."""
        self.faults[reason] = self.faults.get(reason, 0) + 1
        first = not st.episode
        self.resyncs.append(
            Resync(st.symbol, reason, st.last_ts, st.last_id, next_id, detail, first, self.rows)
        )
        st.episode = True
        if st.state == IN_SYNC:
            st.book.clear()
            st.state, st.pending, st.next_due = OUT_OF_SYNC, None, _NEVER

    def _snapshot(self, st: _Symbol, ts: int | None) -> None:
        bp, bq, ap, aq, bids_known, asks_known = st.book.top(self.depth)
        self.snapshots.append(
            BookSnapshot(
                st.symbol,
                -1 if ts is None else ts,
                st.last_id,
                st.synced_from,
                tuple(bp),
                tuple(bq),
                tuple(ap),
                tuple(aq),
                bids_known,
                asks_known,
                self.rows,
            )
        )
        st.episode = False
        if ts is not None:
            st.next_due = ts - ts % self.interval_ms + self.interval_ms

    # -- output --------------------------------------------------------------------------
    def _reset_output(self) -> None:
        self.applied: list[tuple[DepthBatch | None, list]] = []
        self.snapshots: list[BookSnapshot] = []
        self.resyncs: list[Resync] = []
        self.synced: list[Synced] = []
        self.requests: list[SnapshotRequest] = []

    def _update_columns(self) -> dict[str, np.ndarray]:
        parts = [
            _diff_rows(applied) if batch is None else _batch_rows(batch, applied)
            for batch, applied in self.applied
        ]
        if not parts:
            parts = [_diff_rows([])]
        if len(parts) == 1:  # the common case (a burst, nothing synced in it): no copy
            cols = dict(zip(_COLUMNS, parts[0], strict=True))
        else:
            cols = {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(_COLUMNS)}
        cols["symbol"] = cols["symbol"].astype(np.int32, copy=False)
        cols["side"] = cols["side"].astype(np.int8, copy=False)
        return cols


_COLUMNS = (
    "symbol", "first_update_id", "last_update_id", "ts_event", "side", "price", "qty", "frame",
)  # fmt: skip


def _batch_rows(batch: DepthBatch, rows: list[int]) -> list[np.ndarray]:
    """The level rows of diffs ``rows`` of a decoded burst, from its columns."""
    every = len(rows) == len(batch)  # the common case: no diff of the burst left out
    take = slice(None) if every else np.array(rows, dtype=np.int64)
    n_bids = (batch.mid - batch.start[:-1])[take]
    n_asks = (batch.start[1:] - batch.mid)[take]
    n = n_bids + n_asks
    if every:
        price, qty = batch.price, batch.qty
    else:
        mask = np.zeros(len(batch), dtype=bool)
        mask[take] = True
        levels = np.repeat(mask, np.diff(batch.start))
        price, qty = batch.price[levels], batch.qty[levels]
    per_side = np.empty(2 * len(n), dtype=np.int64)  # bids, asks, bids, ... of each diff
    per_side[0::2], per_side[1::2] = n_bids, n_asks
    side = np.repeat(np.tile(np.array([0, 1], dtype=np.int8), len(n)), per_side)
    return [
        np.repeat(batch.code[take], n),
        np.repeat(batch.first[take], n),
        np.repeat(batch.last[take], n),
        np.repeat(batch.ts[take], n),
        side,
        price,
        qty,
        np.repeat(batch.index[take], n),
    ]


def _apply_sides(book, price: np.ndarray, qty: np.ndarray, s: int, m: int, e: int) -> bool:
    """A diff's levels ``[s:m]`` (bids) and ``[m:e]`` (asks) through the sides' ``apply``."""
    book.bids.apply(price[s:m].tolist(), qty[s:m].tolist())
    book.asks.apply(price[m:e].tolist(), qty[m:e].tolist())
    return book.crossed()


def _diff_rows(applied: list[tuple[int, tuple]]) -> list[np.ndarray]:
    """The level rows of diffs applied from a buffer (after a sync), one by one."""
    cols: list[list[int]] = [[] for _ in _COLUMNS]
    for code, (first, last, ts, bp, bq, ap, aq) in applied:
        for side, prices, qtys in ((0, bp, bq), (1, ap, aq)):
            for k, value in enumerate((code, first, last, ts, side)):
                cols[k].extend([value] * len(prices))
            cols[5].extend(prices)
            cols[6].extend(qtys)
            cols[7].extend([-1] * len(prices))
    return [np.array(c, dtype=np.int64) for c in cols]
