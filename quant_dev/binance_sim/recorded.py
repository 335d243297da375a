"""``quant sim binance --source PATH``: a recorded market served over the Binance protocol.

The source is a session log directory (or segment file), a cryptofeed raw capture
(``<url> <-> <epoch_s>`` then ``<epoch_s>: <frame>``) or an hftbacktest capture
(``<epoch_ns> <frame>``). Its frames are served as recorded (symbols and stream names untouched)
with the clock rules of the real exchange:

* **One publication order.** A frame is published at one moment; every client subscribed to
  its stream then gets it (through the usual faults), a client connected later never gets it.
  Publication starts when the first client connects. ``rate`` frames per second, or (``rate``
  0) as fast as the clients read: the next frames go out when every client's send buffer is
  nearly empty, and while no client is connected (between a disconnect and the reconnect)
  the source runs on at its recorded pace. Either way a disconnected client misses what was
  published meanwhile.
* **The exchange clock** (``/api/v3/time``) is the latest exchange time published (``E``, else
  ``T``, of the frames; before the first publication, the first recorded moment), and once the
  source is exhausted it runs on with real time, so the last minutes end.
* **REST knows what happened by then.** The trade history is every aggTrade of the source: the
  frames' and those of the REST answers a session log recorded (gap repairs), merged by id.
  ``/api/v3/aggTrades`` (fromId / startTime / endTime / limit) answers from the trades whose
  time the exchange clock has reached.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from quant_core.formats.captures import read_cryptofeed, read_hftbacktest
from quant_core.sessionlog.format import RecordKind
from quant_core.sessionlog.reader import SessionReader
from quant_dev.binance_sim import rest, wire
from quant_dev.binance_sim.server import SimConfig, Simulator

STREAM_RE = re.compile(rb'"stream"\s*:\s*"([^"]+)"')
LOW_WATER = 256 * 1024  # bytes a client may have unsent before more is published (rate 0)
CHUNK = 512  # frames published at once when the clients keep up (rate 0)
AGG_TRADES_PATH = "/api/v3/aggTrades"


class SourceError(ValueError):
    """A source that cannot be served; names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class SourceFrame:
    stream: str | None  # the combined-stream name as recorded; None when unreadable
    payload: bytes
    event_ms: int | None  # E, else T, of the frame's data
    recv_ns: int


@dataclass
class History:
    """One symbol's aggTrades by id (REST rows as Binance answers them)."""

    rows: dict[int, dict] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    sorted_rows: list[dict] = field(default_factory=list)

    def add(self, row: dict) -> None:
        self.rows.setdefault(int(row["a"]), row)

    def seal(self) -> None:
        self.ids = sorted(self.rows)
        self.sorted_rows = [self.rows[a] for a in self.ids]
        # Trade times never go back with the id on Binance; a running maximum keeps the
        # visibility bound a prefix even if a capture had them slightly out of order.
        top, times = 0, []
        for row in self.sorted_rows:
            top = max(top, int(row["T"]))
            times.append(top)
        self.times = times


@dataclass
class RecordedSource:
    frames: list[SourceFrame]
    history: dict[str, History]  # upper-case symbol -> its trades

    @property
    def symbols(self) -> list[str]:
        return sorted(self.history)


def load_source(path: Path) -> RecordedSource:
    """Read a session log (directory or segment file), a cryptofeed or an hftbacktest capture."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"--source {path}: does not exist")
    history: dict[str, History] = {}
    if path.is_dir() or path.name.endswith((".qlog", ".qlog.zst")):
        frames = _session_frames(path, history)
    else:
        with path.open("rb") as fh:
            first = fh.readline()
            fh.seek(0)
            if b" <-> " in first:
                _, items = read_cryptofeed(fh)
            elif first[:1].isdigit():
                items = read_hftbacktest(fh)
            else:
                raise SourceError(
                    f"--source {path}: line 1 {first[:60]!r} is neither a cryptofeed header "
                    "'<url> <-> <epoch>' nor an hftbacktest line '<epoch_ns> <frame>'"
                )
            frames = [_frame(recv_ns, bytes(data), history) for recv_ns, data in items]
    for h in history.values():
        h.seal()
    if not frames:
        raise SourceError(f"--source {path}: holds no frames")
    return RecordedSource(frames, history)


def _session_frames(path: Path, history: dict[str, History]) -> list[SourceFrame]:
    frames = []
    for rec in SessionReader(path).records():
        if rec.kind == RecordKind.WS:
            frames.append(_frame(rec.recv_ns, bytes(rec.payload), history))
        elif rec.kind == RecordKind.REST and rec.meta:
            meta = orjson.loads(rec.meta)
            if meta.get("path") != AGG_TRADES_PATH or "symbol" not in meta:
                continue
            try:
                rows = orjson.loads(rec.payload)
            except orjson.JSONDecodeError:
                continue  # a broken answer the session recorded: the exchange had no such rows
            if isinstance(rows, list):
                h = history.setdefault(str(meta["symbol"]).upper(), History())
                for row in rows:
                    if isinstance(row, dict) and "a" in row and "T" in row:
                        h.add(row)
    return frames


def _frame(recv_ns: int, payload: bytes, history: dict[str, History]) -> SourceFrame:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        found = STREAM_RE.search(payload)  # a malformed frame still goes to its stream
        stream = found.group(1).decode() if found else None
        return SourceFrame(stream, payload, None, recv_ns)
    data = doc.get("data") if isinstance(doc, dict) else None
    stream = doc.get("stream") if isinstance(doc, dict) else None
    event_ms = None
    if isinstance(data, dict):
        for key in ("E", "T"):
            if type(data.get(key)) is int:
                event_ms = data[key]
                break
        if data.get("e") == "aggTrade" and isinstance(data.get("s"), str):
            try:
                row = {k: data[k] for k in ("a", "p", "q", "f", "l", "T", "m")}
            except KeyError:
                row = None
            if row is not None and type(row["a"]) is int and type(row["T"]) is int:
                row["M"] = data.get("M", True)
                history.setdefault(data["s"].upper(), History()).add(row)
    return SourceFrame(stream if isinstance(stream, str) else None, payload, event_ms, recv_ns)


class RecordedSimulator(Simulator):
    """The simulator's server, sessions, faults and weight limits over a recorded source."""

    def __init__(self, config: SimConfig, source: RecordedSource, rate: float) -> None:
        # The synthetic market the base class builds is never run: one placeholder symbol.
        super().__init__(SimConfig(**{**config.__dict__, "symbols": ["btcusdt"]}))
        self.source = source
        self.rate = rate  # frames per second; 0: as fast as the clients read
        self.api = {
            "/api/v3/ping": lambda sim, q: {},
            "/api/v3/time": lambda sim, q: {"serverTime": sim.exchange_ms()},
            "/api/v3/exchangeInfo": recorded_exchange_info,
            AGG_TRADES_PATH: recorded_agg_trades,
        }
        self.pos = 0  # next frame to publish
        # Before the first publication the clock stands at the first recorded moment: a
        # client starting then learns from REST where the history begins (the trades of that
        # very millisecond), so it can tell a first frame lost in transit from no trade yet.
        firsts = [h.times[0] for h in source.history.values() if h.times]
        firsts += [next((f.event_ms for f in source.frames if f.event_ms is not None), None)]
        firsts = [t for t in firsts if t is not None]
        self.clock_ms = min(firsts) if firsts else int(time.time() * 1000)
        self.started: float | None = None
        self.exhausted_at: float | None = None  # wall time the last frame went out
        self.pace: tuple[float, int] | None = None  # (loop time, recv_ns) of unattended pacing
        self.stats.update(frames_published=0, frames_unattended=0, frames_total=len(source.frames))

    def exchange_ms(self) -> int:
        if self.exhausted_at is None:
            return self.clock_ms
        return self.clock_ms + int((time.time() - self.exhausted_at) * 1000)

    def snapshot(self) -> dict:
        out = super().snapshot()
        for key in ("trades_generated", "aggs_generated", "last_trade_id", "first_trade_id"):
            out.pop(key)
        out.update(
            symbols=self.source.symbols,
            exchange_ms=self.exchange_ms(),
            published=self.pos,
            exhausted=self.exhausted_at is not None,
            last_agg_id={s: h.ids[-1] for s, h in self.source.history.items() if h.ids},
            first_agg_id={s: h.ids[0] for s, h in self.source.history.items() if h.ids},
        )
        return out

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        frames = self.source.frames
        while True:
            await asyncio.sleep(0.001)
            now = loop.time()
            if self.started is None and self.sessions:
                self.started = now
            if self.started is not None and self.pos < len(frames) and not self.paused:
                self.publish_due(now)
            mono = time.monotonic()
            for session in list(self.sessions):
                session.housekeeping(mono)

    def publish_due(self, now: float) -> None:
        frames = self.source.frames
        if self.rate > 0:  # a fixed pace, whoever reads
            self.publish_frames(min(len(frames), int((now - self.started) * self.rate) + 1))
            return
        if not self.sessions:  # nobody reads: the source runs on at its recorded pace
            if self.pace is None:
                self.pace = (now, frames[self.pos].recv_ns)
            t0, r0 = self.pace
            limit = r0 + int((now - t0) * 1e9)
            end = self.pos
            while end < len(frames) and frames[end].recv_ns <= limit:
                end += 1
            self.stats["frames_unattended"] += end - self.pos
            self.publish_frames(end)
            return
        self.pace = None
        if all(s.transport.get_write_buffer_size() < LOW_WATER for s in self.sessions):
            end = min(len(frames), self.pos + CHUNK)
        else:
            return
        self.publish_frames(max(end, self.pos))

    def publish_frames(self, end: int) -> None:
        """Publish frames[pos:end]: the clock moves to them; subscribers get them in order."""
        if end <= self.pos:
            return
        batch = self.source.frames[self.pos : end]
        self.pos = end
        self.stats["frames_published"] += len(batch)
        for f in batch:
            if f.event_ms is not None and f.event_ms > self.clock_ms:
                self.clock_ms = f.event_ms
        if self.pos >= len(self.source.frames):
            self.exhausted_at = time.time()
        active = self.active
        items: list[tuple[str, bytes]] = []
        for f in batch:
            if f.stream is None:  # no stream to route by: everyone connected gets it
                self.deliver(items)
                items = []
                for session in list(self.sessions):
                    session.write([wire.frame(f.payload)])
            elif f.stream in active:
                items.append((f.stream, wire.frame(f.payload)))
        self.deliver(items)

    def deliver(self, items: list[tuple[str, bytes]]) -> None:
        if items:
            n_active = len(self.active)
            for session in list(self.sessions):
                session.deliver(items, n_active)


def recorded_agg_trades(sim: RecordedSimulator, q: dict[str, str]) -> list[dict]:
    name = q.get("symbol", "")
    if not name:
        raise rest.ApiError(
            -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    h = sim.source.history.get(name) if name.isupper() else None
    if h is None:
        raise rest.ApiError(-1121, "Invalid symbol.")
    limit = rest.limit_param(q, 500, 1000)
    from_id = rest.int_param(q, "fromId")
    start, end = rest.int_param(q, "startTime"), rest.int_param(q, "endTime")
    known = bisect.bisect_right(h.times, sim.exchange_ms())  # trades the clock has reached
    if from_id is not None:
        lo = bisect.bisect_left(h.ids, from_id)
    elif start is not None:
        lo = bisect.bisect_left(h.times, start)
    elif end is not None:  # the most recent up to endTime
        lo = max(0, bisect.bisect_right(h.times, end, 0, known) - limit)
    else:
        lo = max(0, known - limit)
    rows = h.sorted_rows[lo : min(lo + limit + len(sim.lost.get(name, ())), known)]
    found = [
        r for r in rows if (start is None or r["T"] >= start) and (end is None or r["T"] <= end)
    ]
    return sim.without_lost(name, found, limit)


def recorded_exchange_info(sim: RecordedSimulator, q: dict[str, str]) -> dict:
    return {
        "timezone": "UTC",
        "serverTime": sim.exchange_ms(),
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": sim.config.weight_limit,
            },
        ],
        "exchangeFilters": [],
        "symbols": [
            {"symbol": s, "status": "TRADING", "isSpotTradingAllowed": True}
            for s in sim.source.symbols
        ],
    }
