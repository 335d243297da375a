"""Deterministic synthetic market: realistic 1-minute equity bars and option chains.

Same (seed, symbol, day) -> same bytes, on any machine: every random stream is seeded from a
SHA-256 of its inputs, never from Python's salted ``hash``. Rows carry ``source=synthetic``.

* Prices follow a daily random walk per symbol (so consecutive days join up) and an intraday
  walk whose volatility and volume are U-shaped over the regular session; extended hours are
  sparse (most minutes have no trade, as in real data).
* OHLC are consistent by construction (on a cent grid), vwap lies within [low, high].
* Options are priced with Black-Scholes on the underlying's bar close at the snapshot time, with
  a volatility smile; bid/ask straddle the model price, Greeks come from the same model.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.calendar import TradingSession
from quant_core.tables import BARS_1M, OPTIONS_QUOTES, decimal_from_scaled

SOURCE = "synthetic"
EPOCH = date(2000, 1, 1)
DAYS = 40_000  # daily walk precomputed until about 2109
ANNUAL_VOL = 0.25
RATE = 0.04
MINUTE_MS = 60_000


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


@lru_cache(maxsize=256)
def _daily_log_levels(seed: int, symbol: str) -> np.ndarray:
    rng = _rng(seed, symbol, "daily")
    base = math.log(rng.uniform(20, 500))
    steps = rng.normal(0.00003, 0.18 / math.sqrt(252), DAYS)
    return base + np.concatenate([[0.0], np.cumsum(steps)])


def open_price(seed: int, symbol: str, day: date) -> float:
    return float(math.exp(_daily_log_levels(seed, symbol)[(day - EPOCH).days]))


def equity_bars(seed: int, symbol: str, sess: TradingSession) -> pa.Table:
    """All minutes of one session (pre, regular, post) for one symbol, schema ``BARS_1M``."""
    rng = _rng(seed, symbol, sess.day.isoformat())
    start_ms = int(sess.pre_open.timestamp() * 1000)
    total = int((sess.post_close - sess.pre_open).total_seconds() // 60)
    minute_ms = start_ms + MINUTE_MS * np.arange(total, dtype=np.int64)
    open_ms, close_ms = (int(t.timestamp() * 1000) for t in (sess.open, sess.close))
    regular = (minute_ms >= open_ms) & (minute_ms < close_ms)
    pre = minute_ms < open_ms

    # U-shape over the regular session: x in [0, 1] from open to close.
    x = np.clip((minute_ms - open_ms) / max(close_ms - open_ms, 1), 0, 1)
    u = 1.0 + 3.0 * (2 * x - 1) ** 2
    vol = np.where(regular, u, 0.6) * ANNUAL_VOL / math.sqrt(252 * 390)
    returns = rng.normal(0, 1, total) * vol
    log_close = math.log(open_price(seed, symbol, sess.day)) + np.cumsum(returns)
    close_c = np.maximum(np.round(np.exp(log_close) * 100), 1).astype(np.int64)
    open_c = np.concatenate([[close_c[0]], close_c[:-1]])
    wick = np.exp(np.abs(rng.normal(0, 1, (2, total))) * vol * 0.8)
    high_c = np.maximum(
        np.round(np.maximum(open_c, close_c) * wick[0]), np.maximum(open_c, close_c)
    )
    low_c = np.minimum(np.round(np.minimum(open_c, close_c) / wick[1]), np.minimum(open_c, close_c))
    low_c = np.maximum(low_c, 1).astype(np.int64)
    high_c = high_c.astype(np.int64)

    base_volume = rng.uniform(2_000, 40_000)
    volume = np.where(regular, base_volume * u, base_volume * 0.03) * rng.lognormal(0, 0.5, total)
    volume = np.maximum(np.round(volume), 1).astype(np.int64)
    # Extended hours are sparse: most minutes have no trade, hence no bar.
    keep = regular | (rng.random(total) < 0.25)
    trade_count = np.maximum(volume // rng.integers(50, 200), 1).astype(np.int64)
    # vwap in hundredths of a cent, inside [low, high].
    vwap_4 = np.clip(
        np.round((high_c + low_c + 2 * close_c) * 25), low_c * 100, high_c * 100
    ).astype(np.int64)

    def k(a: np.ndarray) -> np.ndarray:
        return a[keep]

    n = int(keep.sum())
    session = np.where(regular, "regular", np.where(pre, "pre", "post"))[keep]
    volume_k = k(volume)
    vwap_k = k(vwap_4)
    ts = pa.array(k(minute_ms), pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    zero = decimal_from_scaled(np.zeros(n, dtype=np.int64), 0)
    return pa.Table.from_arrays(
        [
            pa.array([SOURCE] * n),
            pa.array([symbol] * n),
            pa.array(["1m"] * n),
            ts,
            pa.array(k(minute_ms) + MINUTE_MS - 1, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array([sess.day] * n, pa.date32()),
            pa.array(session),
            decimal_from_scaled(k(open_c), 2),
            decimal_from_scaled(k(high_c), 2),
            decimal_from_scaled(k(low_c), 2),
            decimal_from_scaled(k(close_c), 2),
            decimal_from_scaled(volume_k, 0),
            decimal_from_scaled(volume_k * vwap_k, 4),
            decimal_from_scaled(vwap_k, 4),
            pa.array(k(trade_count), pa.uint64()),
            zero,
            zero,
            pa.array(["raw"] * n),
            pa.array(np.ones(n)),
        ],
        schema=BARS_1M,
    )


# -- options ------------------------------------------------------------------------------------


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _norm_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def black_scholes(spot, strike, years, vol, is_call, rate: float = RATE) -> dict[str, np.ndarray]:
    """Price and Greeks (theta per day, vega and rho per 1 point) of European options."""
    spot, strike, years, vol = (np.asarray(a, dtype=float) for a in (spot, strike, years, vol))
    is_call = np.asarray(is_call, dtype=bool)
    sqrt_t = np.sqrt(years)
    d1 = (np.log(spot / strike) + (rate + 0.5 * vol**2) * years) / (vol * sqrt_t)
    d2 = d1 - vol * sqrt_t
    disc = np.exp(-rate * years)
    call = spot * _norm_cdf(d1) - strike * disc * _norm_cdf(d2)
    put = strike * disc * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
    pdf = _norm_pdf(d1)
    theta_common = -spot * pdf * vol / (2 * sqrt_t)
    return {
        "price": np.where(is_call, call, put),
        "delta": np.where(is_call, _norm_cdf(d1), _norm_cdf(d1) - 1),
        "gamma": pdf / (spot * vol * sqrt_t),
        "vega": spot * pdf * sqrt_t / 100,
        "theta": np.where(
            is_call,
            theta_common - rate * strike * disc * _norm_cdf(d2),
            theta_common + rate * strike * disc * _norm_cdf(-d2),
        )
        / 365,
        "rho": np.where(
            is_call, strike * years * disc * _norm_cdf(d2), -strike * years * disc * _norm_cdf(-d2)
        )
        / 100,
    }


def expiries(day: date, count: int = 4) -> list[date]:
    """The next ``count`` Friday expiries after ``day`` (weeklies)."""
    first = day + timedelta(days=(4 - day.weekday()) % 7 or 7)
    return [first + timedelta(weeks=i) for i in range(count)]


def option_chain(
    seed: int,
    underlying: str,
    day: date,
    snapshot: datetime,
    spot: float,
    strikes_each_side: int = 5,
) -> pa.Table:
    """The chain of ``underlying`` at ``snapshot`` priced off ``spot`` (``OPTIONS_QUOTES``)."""
    rng = _rng(seed, underlying, snapshot.isoformat(), "chain")
    step = 1.0 if spot < 100 else 5.0
    center = round(spot / step) * step
    strikes = center + step * np.arange(-strikes_each_side, strikes_each_side + 1)
    strikes = strikes[strikes > 0]
    rows = [(e, k, c) for e in expiries(day) for k in strikes for c in (True, False)]
    expiry = np.array([r[0] for r in rows])
    strike = np.array([r[1] for r in rows])
    is_call = np.array([r[2] for r in rows])
    # Expiry at 16:00 New York ~ 20:00 UTC; at least an hour left to keep the model finite.
    seconds_left = [
        (
            datetime.combine(e, datetime.min.time(), UTC) + timedelta(hours=20) - snapshot
        ).total_seconds()
        for e in expiry
    ]
    years = np.maximum(np.array(seconds_left), 3600) / (365 * 86400)
    moneyness = np.log(strike / spot)
    vol = ANNUAL_VOL * (1 + 0.8 * moneyness**2 / np.maximum(years, 0.02) * 0.05 - 0.3 * moneyness)
    model = black_scholes(spot, strike, years, vol, is_call)
    price = np.maximum(model["price"], 0.01)
    half_spread = np.maximum(0.01, price * 0.02)
    bid_c = np.maximum(np.floor((price - half_spread) * 100), 0).astype(np.int64)
    ask_c = np.maximum(np.ceil((price + half_spread) * 100), bid_c + 1).astype(np.int64)
    last_c = np.clip(np.round(price * 100), np.maximum(bid_c, 1), ask_c).astype(np.int64)
    n = len(rows)
    ts_ms = int(snapshot.timestamp() * 1000) - rng.integers(0, 60_000, n)
    occ = [f"{underlying}{e:%y%m%d}{'C' if c else 'P'}{round(k * 1000):08d}" for e, k, c in rows]
    spot_c = decimal_from_scaled(np.full(n, round(spot * 100), dtype=np.int64), 2)
    return pa.Table.from_arrays(
        [
            pa.array([SOURCE] * n),
            pa.array([underlying] * n),
            pa.array(occ),
            pa.array(expiry, pa.date32()),
            decimal_from_scaled(np.round(strike * 1000).astype(np.int64), 3),
            pa.array(np.where(is_call, "call", "put")),
            pa.array(ts_ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array([snapshot] * n, pa.timestamp("ms", tz="UTC")),
            pa.array([day] * n, pa.date32()),
            decimal_from_scaled(bid_c, 2),
            decimal_from_scaled(ask_c, 2),
            decimal_from_scaled(rng.integers(1, 200, n), 0),
            decimal_from_scaled(rng.integers(1, 200, n), 0),
            decimal_from_scaled(last_c, 2),
            spot_c,
            pa.array(vol),
            pa.array(model["delta"]),
            pa.array(model["gamma"]),
            pa.array(model["theta"]),
            pa.array(model["vega"]),
            pa.array(model["rho"]),
        ],
        schema=OPTIONS_QUOTES,
    )


def option_bars(seed: int, occ_symbol: str, sess: TradingSession) -> pa.Table:
    """Regular-hours minute bars of one option contract, priced with Black-Scholes off the
    underlying's synthetic minute closes. Sparse like real option tape: most minutes of an
    out-of-the-money contract see no trade."""
    from quant_core.contracts import OccSymbol

    occ = OccSymbol(occ_symbol)
    under = equity_bars(seed, occ.root, sess)
    regular = under.filter(pc.equal(under.column("session"), "regular"))
    rng = _rng(seed, occ_symbol, sess.day.isoformat(), "option-bars")
    ts_ms = regular.column("ts").cast(pa.int64()).to_numpy()
    spot = np.array([float(v) for v in regular.column("close").to_pylist()])
    expiry_close = datetime.combine(occ.expiry, datetime.min.time(), UTC) + timedelta(hours=20)
    years = np.maximum(expiry_close.timestamp() - ts_ms / 1000, 3600) / (365 * 86400)
    strike = float(occ.strike)
    vol = ANNUAL_VOL * (1 - 0.3 * np.log(strike / spot))
    price = black_scholes(spot, strike, years, vol, occ.right.value == "call")["price"]
    close_c = np.maximum(np.round(price * 100), 1).astype(np.int64)
    open_c = np.concatenate([[close_c[0]], close_c[:-1]])
    high_c, low_c = np.maximum(open_c, close_c), np.minimum(open_c, close_c)
    keep = rng.random(len(close_c)) < 0.35
    volume = rng.integers(1, 50, len(close_c))
    n = int(keep.sum())
    zero = decimal_from_scaled(np.zeros(n, dtype=np.int64), 0)
    vwap_4 = np.clip((high_c + low_c) * 50, low_c * 100, high_c * 100)[keep]
    return pa.Table.from_arrays(
        [
            pa.array([SOURCE] * n),
            pa.array([occ_symbol] * n),
            pa.array(["1m"] * n),
            pa.array(ts_ms[keep], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array(ts_ms[keep] + MINUTE_MS - 1, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array([sess.day] * n, pa.date32()),
            pa.array(["regular"] * n),
            decimal_from_scaled(open_c[keep], 2),
            decimal_from_scaled(high_c[keep], 2),
            decimal_from_scaled(low_c[keep], 2),
            decimal_from_scaled(close_c[keep], 2),
            decimal_from_scaled(volume[keep], 0),
            decimal_from_scaled(volume[keep] * vwap_4, 4),
            decimal_from_scaled(vwap_4, 4),
            pa.array(np.maximum(volume[keep] // 5, 1), pa.uint64()),
            zero,
            zero,
            pa.array(["raw"] * n),
            pa.array(np.ones(n)),
        ],
        schema=BARS_1M,
    )
