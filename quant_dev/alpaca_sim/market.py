"""The simulator's market: ``quant_core.synthetic`` data in Alpaca's JSON shapes.

Every bar is serialised once per (seed, symbol, day) into a JSON object and cached, so pages are
assembled by joining bytes: the simulator must serve faster than the clients it benchmarks.
Prices leave as floats (as Alpaca sends them) whose shortest repr is the exact cent (or 1/100
cent for vwap) value of the generator, so a client can recover the generator's decimals exactly.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.calendar import NEW_YORK, is_trading_day, session
from quant_core.synthetic import ANNUAL_VOL, black_scholes, equity_bars, option_chain
from quant_core.tables import PRICE

MINUTE_MS = 60_000
OCC = re.compile(r"^([A-Z]{1,6})(\d{6})([CP])(\d{8})$")
LOOKBACK_DAYS = 10  # how far back a snapshot looks for the underlying's last bar


@dataclass(frozen=True)
class Chunk:
    """Bars of one symbol (and one day): open times in ms and one JSON object per bar."""

    ts_ms: np.ndarray
    rows: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.rows)

    @cached_property
    def _joined(self) -> tuple[bytes, np.ndarray]:
        starts = np.zeros(len(self.rows) + 1, dtype=np.int64)
        np.cumsum([len(r) + 1 for r in self.rows], out=starts[1:])
        return b",".join(self.rows), starts

    def joined(self, lo: int, hi: int) -> bytes:
        """Rows ``lo:hi`` as one comma-separated run of JSON objects: a page is a few of
        these, not ten thousand small joins."""
        blob, starts = self._joined
        return blob[starts[lo] : starts[hi] - 1]


EMPTY = Chunk(np.empty(0, dtype=np.int64), ())


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _floats(column: pa.ChunkedArray) -> list[float]:
    """Decimal(38, 8) -> the nearest floats. Arrow's own cast is not correctly rounded
    (4175.98 -> 4175.9800000000005); one IEEE division of the unscaled integer is."""
    array = column.combine_chunks()
    words = np.frombuffer(array.buffers()[1], dtype=np.int64)[2 * array.offset :]
    unscaled = words[0 : 2 * len(array) : 2]  # low words: values fit int64 here
    return (unscaled / 10**PRICE.scale).tolist()


def _rows(ts_ms: np.ndarray, o, h, low, c, v, n, vw) -> tuple[bytes, ...]:
    # Whole seconds: Arrow's %S prints fractions for a millisecond timestamp.
    stamps = pc.strftime(pa.array(ts_ms // 1000, pa.timestamp("s", tz="UTC")), "%Y-%m-%dT%H:%M:%SZ")
    stamps = stamps.to_pylist()
    keys = ("t", "o", "h", "l", "c", "v", "n", "vw")
    return tuple(
        orjson.dumps(dict(zip(keys, values, strict=True)))
        for values in zip(stamps, o, h, low, c, v, n, vw, strict=True)
    )


def _chunk_from_bars(table: pa.Table) -> Chunk:
    ts_ms = table["ts"].cast(pa.int64()).to_numpy()
    return Chunk(
        ts_ms,
        _rows(
            ts_ms,
            *(_floats(table[k]) for k in ("open", "high", "low", "close")),
            table["volume"].cast(pa.int64()).to_pylist(),
            table["trade_count"].to_pylist(),
            _floats(table["vwap"]),
        ),
    )


@lru_cache(maxsize=1024)
def _equity_table(seed: int, symbol: str, day: date) -> pa.Table:
    return equity_bars(seed, symbol, session(day))


@lru_cache(maxsize=16384)
def stock_day(seed: int, symbol: str, day: date) -> Chunk:
    """All 1-minute bars of ``symbol`` on ``day`` (none on a non-trading day)."""
    if not is_trading_day(day):
        return EMPTY
    return _chunk_from_bars(_equity_table(seed, symbol, day))


@lru_cache(maxsize=16384)
def stock_daily(seed: int, symbol: str, day: date) -> Chunk:
    """One 1-day bar from the regular session, stamped at New York midnight like Alpaca's."""
    if not is_trading_day(day):
        return EMPTY
    table = _equity_table(seed, symbol, day)
    table = table.filter(pc.equal(table["session"], "regular"))
    open_c = np.rint(np.array(_floats(table["open"])) * 100).astype(np.int64)
    high_c = np.rint(np.array(_floats(table["high"])) * 100).astype(np.int64)
    low_c = np.rint(np.array(_floats(table["low"])) * 100).astype(np.int64)
    close_c = np.rint(np.array(_floats(table["close"])) * 100).astype(np.int64)
    volume = table["volume"].cast(pa.int64()).to_numpy()
    vwap_4 = np.rint(np.array(_floats(table["vwap"])) * 10_000).astype(np.int64)
    day_vwap_4 = int(np.rint((volume * vwap_4).sum() / max(volume.sum(), 1)))
    midnight = datetime.combine(day, datetime.min.time(), NEW_YORK).astimezone(UTC)
    ts = np.array([int(midnight.timestamp() * 1000)], dtype=np.int64)
    return Chunk(
        ts,
        _rows(
            ts,
            [int(open_c[0]) / 100],
            [int(high_c.max()) / 100],
            [int(low_c.min()) / 100],
            [int(close_c[-1]) / 100],
            [int(volume.sum())],
            [int(table["trade_count"].cast(pa.int64()).to_numpy().sum())],
            [day_vwap_4 / 10_000],
        ),
    )


# -- options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    root: str
    expiry: date
    is_call: bool
    strike: float


def parse_occ(symbol: str) -> Contract | None:
    match = OCC.match(symbol)
    if match is None:
        return None
    root, ymd, right, strike = match.groups()
    try:
        expiry = date(2000 + int(ymd[:2]), int(ymd[2:4]), int(ymd[4:]))
    except ValueError:
        return None
    return Contract(root, expiry, right == "C", int(strike) / 1000)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _smile(spot: np.ndarray, strike: float, years: np.ndarray) -> np.ndarray:
    # Same smile as quant_core.synthetic.option_chain, so bars and snapshots agree.
    moneyness = np.log(strike / spot)
    return ANNUAL_VOL * (1 + 0.8 * moneyness**2 / np.maximum(years, 0.02) * 0.05 - 0.3 * moneyness)


@lru_cache(maxsize=16384)
def option_day(seed: int, symbol: str, day: date) -> Chunk:
    """1-minute bars of one contract: Black-Scholes on the underlying's regular-session minute
    closes, kept sparsely (contracts far from the money trade rarely)."""
    contract = parse_occ(symbol)
    if contract is None or not is_trading_day(day) or day > contract.expiry:
        return EMPTY
    table = _equity_table(seed, contract.root, day)
    table = table.filter(pc.equal(table["session"], "regular"))
    minute_ms = table["ts"].cast(pa.int64()).to_numpy()
    spot = np.array(_floats(table["close"]))
    expiry_at = datetime.combine(contract.expiry, datetime.min.time(), UTC) + timedelta(hours=20)
    seconds_left = (expiry_at.timestamp() * 1000 - minute_ms) / 1000
    years = np.maximum(seconds_left, 3600) / (365 * 86400)
    vol = _smile(spot, contract.strike, years)
    price = black_scholes(spot, contract.strike, years, vol, contract.is_call)["price"]
    price_c = np.maximum(np.rint(price * 100), 1).astype(np.int64)

    rng = _rng(seed, symbol, day.isoformat(), "option-bars")
    near = np.exp(-np.abs(np.log(contract.strike / spot)) * 20)
    keep = rng.random(price_c.size) < 0.1 + 0.5 * near
    index = np.flatnonzero(keep)
    close_c = price_c[index]
    open_c = price_c[np.maximum(index - 1, 0)]
    size = index.size
    high_c = np.maximum(open_c, close_c) + rng.integers(0, 3, size)
    low_c = np.maximum(np.minimum(open_c, close_c) - rng.integers(0, 3, size), 1)
    volume = rng.integers(1, 80, size)
    trade_count = np.maximum(volume // rng.integers(1, 6, size), 1)
    vwap_4 = np.clip(np.rint((high_c + low_c + 2 * close_c) * 25), low_c * 100, high_c * 100)
    ts = minute_ms[index]
    return Chunk(
        ts,
        _rows(
            ts,
            (open_c / 100).tolist(),
            (high_c / 100).tolist(),
            (low_c / 100).tolist(),
            (close_c / 100).tolist(),
            volume.tolist(),
            trade_count.tolist(),
            (vwap_4 / 10_000).tolist(),
        ),
    )


def last_bar(seed: int, symbol: str, now: datetime) -> tuple[int, bytes] | None:
    """The last bar of ``symbol`` completed at ``now``: (open time in ms, JSON object)."""
    now_ms = int(now.timestamp() * 1000)
    day = now.astimezone(NEW_YORK).date()
    for _ in range(LOOKBACK_DAYS):
        chunk = stock_day(seed, symbol, day)
        done = int(np.searchsorted(chunk.ts_ms, now_ms - MINUTE_MS, side="right"))
        if done:
            return int(chunk.ts_ms[done - 1]), chunk.rows[done - 1]
        day -= timedelta(days=1)
    return None


@dataclass(frozen=True)
class Chain:
    """A snapshot of one chain: the generator's table, the spot it was priced off and which
    contracts the feed reports without a last trade or without Greeks (as Alpaca does)."""

    table: pa.Table
    spot: float
    no_trade: np.ndarray
    no_greeks: np.ndarray
    objects: dict[str, bytes]


@lru_cache(maxsize=256)
def chain(seed: int, underlying: str, now: datetime) -> Chain | None:
    last = last_bar(seed, underlying, now)
    if last is None:
        return None
    spot = orjson.loads(last[1])["c"]
    table = option_chain(seed, underlying, now.astimezone(NEW_YORK).date(), now, spot)
    rng = _rng(seed, underlying, now.isoformat(), "omissions")
    n = table.num_rows
    no_trade = rng.random(n) < 0.15
    no_greeks = rng.random(n) < 0.10
    cols = {
        k: table[k].to_pylist()
        for k in ("symbol", "implied_volatility", "delta", "gamma", "theta", "vega", "rho")
    }
    prices = {k: _floats(table[k]) for k in ("bid_price", "ask_price", "last_price")}
    sizes = {k: table[k].cast(pa.int64()).to_pylist() for k in ("bid_size", "ask_size")}
    stamps = pc.strftime(table["ts"], "%Y-%m-%dT%H:%M:%SZ").to_pylist()  # %S has the ms
    objects = {}
    for i, occ in enumerate(cols["symbol"]):
        snap: dict[str, object] = {
            "latestQuote": {
                "ap": prices["ask_price"][i],
                "as": sizes["ask_size"][i],
                "ax": "C",
                "bp": prices["bid_price"][i],
                "bs": sizes["bid_size"][i],
                "bx": "X",
                "c": "A",
                "t": stamps[i],
            }
        }
        if not no_trade[i]:
            trade = {"c": "I", "p": prices["last_price"][i], "s": 1, "t": stamps[i], "x": "C"}
            snap["latestTrade"] = trade
        if not no_greeks[i]:
            snap["greeks"] = {g: cols[g][i] for g in ("delta", "gamma", "rho", "theta", "vega")}
            snap["impliedVolatility"] = cols["implied_volatility"][i]
        objects[occ] = orjson.dumps(snap)
    return Chain(table, spot, no_trade, no_greeks, dict(sorted(objects.items())))
