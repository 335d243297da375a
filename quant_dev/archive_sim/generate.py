"""Archive files generated from the exchange simulator's market, deterministically.

A day's aggregate trades come from ``quant_dev.binance_sim.market.SymbolMarket`` seeded with
(seed, day), so prices, sizes, sides and trades per aggregate are the exchange simulator's,
and a day's files never depend on which other days were asked for. The simulator's own
timestamps are wall-clock; here the ``aggs_per_day`` aggregates are spread evenly over the
UTC day (one per slot, at a seeded offset inside it). Ids are laid out per day so that a
month file is its days joined: aggregate ids run on without gaps from day to day; trade ids
leave a gap between days (a day reserves ``MAX_TRADES_PER_AGG`` ids per aggregate).

Klines are the project's own 1m bars of the day's aggTrades (``quant_core.bars``); a minute
without trades has no kline (the archive would carry an empty one). Files dated from
2025-01-01 carry microseconds, earlier ones milliseconds, as Binance's spot files do.
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.bars import aggregate_trades
from quant_core.formats.binance_archive import Period, file_name, member_name
from quant_core.tables import scaled_int64
from quant_dev.binance_sim.market import MAX_TRADES_PER_AGG, SymbolMarket, spec_for

MICROS_FROM = date(2025, 1, 1)
DAY_US = 86_400_000_000
EPOCH = date(2017, 1, 1)  # ids count days from here
CHUNK = 65_536  # aggregates drawn from the market at a time
HEADERS = {
    "aggTrades": "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
    "is_buyer_maker,is_best_match",
    "trades": "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match",
    "klines": "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore",
}


@dataclass(frozen=True)
class DayTrades:
    """One symbol-day: per aggregate (agg_*) and per trade (t_*), amounts in 10**-8 units."""

    agg_id: np.ndarray
    first: np.ndarray
    count: np.ndarray
    price: np.ndarray
    agg_qty: np.ndarray
    maker: np.ndarray
    time_us: np.ndarray
    t_qty: np.ndarray


@functools.lru_cache(maxsize=2)  # a day's klines follow its aggTrades: generate once
def day_trades(symbol: str, day: date, seed: int, aggs_per_day: int) -> DayTrades:
    day_seed = zlib.crc32(f"{seed}|{day.isoformat()}".encode())
    capacity = CHUNK * MAX_TRADES_PER_AGG  # a chunk's trades never wrap over themselves
    market = SymbolMarket(spec_for(symbol), day_seed, start_trade_id=1, capacity=capacity)
    prices, counts, makers, agg_qty, t_qty = [], [], [], [], []
    left = aggs_per_day
    while left:
        take = min(left, CHUNK)
        left -= take
        # The market keeps what it generated in ring arrays indexed by id % capacity.
        a0, t0 = market.next_agg_id, market.next_trade_id
        market.generate(take, 0)
        aggs = np.arange(a0, a0 + take) % capacity
        firsts = market.a_first[aggs] % capacity
        prices.append(market.t_price[firsts])
        makers.append(market.t_maker[firsts])
        counts.append(market.a_count[aggs].astype(np.int64))
        agg_qty.append(market.a_qty[aggs])
        t_qty.append(market.t_qty[np.arange(t0, market.next_trade_id) % capacity])
    count = np.concatenate(counts)
    index = (day - EPOCH).days
    trade_base = index * aggs_per_day * MAX_TRADES_PER_AGG + 1
    rng = np.random.default_rng([seed, index])
    slot = DAY_US // aggs_per_day
    day_start_us = Period.day(day).bounds_ms()[0] * 1000
    return DayTrades(
        agg_id=index * aggs_per_day + 1 + np.arange(aggs_per_day, dtype=np.int64),
        first=trade_base + np.cumsum(count) - count,
        count=count,
        price=np.concatenate(prices),
        agg_qty=np.concatenate(agg_qty),
        maker=np.concatenate(makers),
        time_us=day_start_us + np.arange(aggs_per_day) * slot + rng.integers(0, slot, aggs_per_day),
        t_qty=np.concatenate(t_qty),
    )


def _decimal_text(units: np.ndarray) -> pa.Array:
    """Units of 10**-8 -> '60000.10000000' (non-negative; always 8 places, as Binance)."""
    fraction = pc.utf8_lpad(_int_text(units % 100_000_000), 8, "0")
    return pc.binary_join_element_wise(_int_text(units // 100_000_000), fraction, ".")


def _bool_text(values: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(values), "True", "False")


def _int_text(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values, pa.int64()), pa.string())


def _csv(columns: list[pa.Array]) -> bytes:
    """Rows joined by commas, each ended by a newline (Arrow, no Python loop over rows)."""
    if not len(columns[0]):
        return b""
    rows = pc.binary_join_element_wise(*columns, pa.scalar(""), ",")  # "a,b,c,"
    lines = pc.binary_join_element_wise(pc.utf8_slice_codeunits(rows, 0, -1), "", "\n")
    return _concat(lines)


def _concat(strings: pa.Array) -> bytes:
    strings = strings.cast(pa.large_string())
    offsets = np.frombuffer(strings.buffers()[1], np.int64)[strings.offset :]
    data = strings.buffers()[2]
    return data.to_pybytes()[offsets[0] : offsets[len(strings)]]


def _time_text(time_us: np.ndarray, micros: bool) -> pa.Array:
    return _int_text(time_us if micros else time_us // 1000)


def agg_trades_table(trades: DayTrades, symbol: str) -> pa.Table:
    """The day's aggTrades as ``quant_core.bars.aggregate_trades`` takes them."""
    return pa.table(
        {
            "symbol": pa.repeat(pa.scalar(symbol.upper()), len(trades.price)),
            "trade_id": pa.array(trades.agg_id),
            "first_trade_id": pa.array(trades.first),
            "last_trade_id": pa.array(trades.first + trades.count - 1),
            "price": pa.array(trades.price),
            "qty": pa.array(trades.agg_qty),
            "ts_event": pa.array(trades.time_us).cast(pa.timestamp("us", tz="UTC")),
            "is_buyer_maker": pa.array(trades.maker),
        }
    )


def day_csv(kind: str, symbol: str, day: date, seed: int, aggs_per_day: int) -> bytes:
    """A day's CSV rows (no header) of ``kind``."""
    trades = day_trades(symbol, day, seed, aggs_per_day)
    micros = day >= MICROS_FROM
    if kind == "aggTrades":
        return _csv(
            [
                _int_text(trades.agg_id),
                _decimal_text(trades.price),
                _decimal_text(trades.agg_qty),
                _int_text(trades.first),
                _int_text(trades.first + trades.count - 1),
                _time_text(trades.time_us, micros),
                _bool_text(trades.maker),
                _bool_text(np.ones(len(trades.price), np.bool_)),
            ]
        )
    if kind == "trades":
        price = np.repeat(trades.price, trades.count)
        quote = _half_even_8(price, trades.t_qty)
        n = len(price)
        return _csv(
            [
                _int_text(np.repeat(trades.first, trades.count) + _within(trades.count)),
                _decimal_text(price),
                _decimal_text(trades.t_qty),
                _decimal_text(quote),
                _time_text(np.repeat(trades.time_us, trades.count), micros),
                _bool_text(np.repeat(trades.maker, trades.count)),
                _bool_text(np.ones(n, np.bool_)),
            ]
        )
    if kind == "klines":
        bars = aggregate_trades(agg_trades_table(trades, symbol))
        per = 1000 if micros else 1
        opens = pc.cast(bars["ts"], pa.int64()).to_numpy() * per
        text = {
            name: _decimal_text(scaled_int64(bars[name]))
            for name in (
                "open",
                "high",
                "low",
                "close",
                "volume",
                "quote_volume",
                "taker_buy_volume",
                "taker_buy_quote_volume",
            )
        }
        return _csv(
            [
                _int_text(opens),
                text["open"],
                text["high"],
                text["low"],
                text["close"],
                text["volume"],
                _int_text(opens + 60_000 * per - 1),
                text["quote_volume"],
                _int_text(pc.cast(bars["trade_count"], pa.int64()).to_numpy()),
                text["taker_buy_volume"],
                text["taker_buy_quote_volume"],
                pa.repeat(pa.scalar("0"), len(opens)),
            ]
        )
    raise ValueError(f"kind={kind!r} is not one of aggTrades, trades, klines")


def _within(count: np.ndarray) -> np.ndarray:
    """0, 1, .. count-1 for each aggregate, concatenated."""
    starts = np.repeat(np.cumsum(count) - count, count)
    return np.arange(int(count.sum()), dtype=np.int64) - starts


def _half_even_8(price: np.ndarray, qty: np.ndarray) -> np.ndarray:
    """price x qty rounded half-even to 8 places (Binance's quote qty), exactly (Python ints:
    the product needs up to 126 bits)."""
    out = np.empty(len(price), np.int64)
    for i, (p, q) in enumerate(zip(price.tolist(), qty.tolist(), strict=True)):
        quot, rem = divmod(p * q, 10**8)
        out[i] = quot + (2 * rem > 10**8 or (2 * rem == 10**8 and quot & 1))
    return out


def period_csv(
    kind: str, symbol: str, period: Period, seed: int, aggs_per_day: int, header: bool
) -> bytes:
    parts = [HEADERS[kind].encode() + b"\n"] if header else []
    parts += [day_csv(kind, symbol, d, seed, aggs_per_day) for d in period.days()]
    return b"".join(parts)


def zipped(kind: str, symbol: str, period: Period, csv: bytes) -> bytes:
    """The archive's zip: one member named like the zip with ``.csv``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr(member_name(file_name(kind, symbol, period)), csv)
    return out.getvalue()


def checksum_text(name: str, body: bytes) -> bytes:
    return f"{hashlib.sha256(body).hexdigest()}  {name}\n".encode()
