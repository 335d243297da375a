"""Data-quality rules on bar and quote frames (Arrow), shared by pre-write validation and the
asset checks. Every finding names the symbol and the timestamp."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.calendar import TradingSession


@dataclass(frozen=True)
class Finding:
    rule: str
    symbol: str
    ts: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: symbol={self.symbol} ts={self.ts} {self.detail}"


def _findings(table: pa.Table, mask: pa.Array, rule: str, detail: str, limit: int) -> list[Finding]:
    bad = table.filter(pc.fill_null(mask, True)).slice(0, limit)
    return [
        Finding(rule, str(row["symbol"]), _iso(row["ts"]), detail.format(**row))
        for row in bad.to_pylist()
    ]


def _iso(value) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def ohlc_findings(bars: pa.Table, limit: int = 20) -> list[Finding]:
    """high >= max(open, close), low <= min(open, close), low > 0, volume >= 0, no nulls."""
    o, h, lo, c, v = (bars.column(n) for n in ("open", "high", "low", "close", "volume"))
    rules = [
        (
            pc.less(h, pc.max_element_wise(o, c)),
            "high_below_body",
            "high={high} < max(open={open}, close={close})",
        ),
        (
            pc.greater(lo, pc.min_element_wise(o, c)),
            "low_above_body",
            "low={low} > min(open={open}, close={close})",
        ),
        (pc.less_equal(lo, 0), "non_positive_price", "low={low}"),
        (pc.less(v, 0), "negative_volume", "volume={volume}"),
    ]
    found: list[Finding] = []
    for mask, rule, detail in rules:
        found += _findings(bars, mask, rule, detail, limit - len(found))
        if len(found) >= limit:
            break
    return found


def _ordered_without_repeats(table: pa.Table, keys: tuple[str, ...]) -> bool:
    """True when every row's key is strictly after the previous row's (lexicographically over
    ``keys``): one vectorised pass that proves a provider-ordered frame clean, so the hash
    grouping below only runs when something may be wrong."""
    if table.num_rows < 2:
        return True
    n = table.num_rows
    equal = np.ones(n - 1, dtype=bool)
    ascending = np.zeros(n - 1, dtype=bool)
    for key in keys:
        column = table.column(key)
        current, previous = column.slice(1), column.slice(0, n - 1)
        greater = pc.fill_null(pc.greater(current, previous), False)
        ascending |= equal & greater.to_numpy(zero_copy_only=False)
        equal &= pc.fill_null(pc.equal(current, previous), False).to_numpy(zero_copy_only=False)
    return bool(ascending.all())


def duplicate_findings(table: pa.Table, keys: tuple[str, ...], limit: int = 20) -> list[Finding]:
    if _ordered_without_repeats(table, keys):
        return []
    counts = table.group_by(list(keys)).aggregate([([], "count_all")])
    dupes = counts.filter(pc.greater(counts.column("count_all"), 1)).slice(0, limit)
    return [
        Finding("duplicate", str(r.get("symbol")), _iso(r.get("ts")), f"{r['count_all']} rows")
        for r in dupes.to_pylist()
    ]


def outside_session_findings(
    bars: pa.Table, sessions: dict[date, TradingSession], limit: int = 20
) -> list[Finding]:
    if _inside_sessions(bars, sessions):
        return []
    found: list[Finding] = []
    for day, sess in sessions.items():
        of_day = bars.filter(pc.equal(bars.column("session_date"), pa.scalar(day, pa.date32())))
        ts = of_day.column("ts")
        mask = pc.or_(
            pc.less(ts, pa.scalar(sess.pre_open, ts.type)),
            pc.greater_equal(ts, pa.scalar(sess.post_close, ts.type)),
        )
        found += _findings(
            of_day,
            mask,
            "outside_session",
            f"session {day} is {sess.pre_open:%H:%M}-{sess.post_close:%H:%M} UTC",
            limit - len(found),
        )
    days = set(sessions)
    stray = [d for d in pc.unique(bars.column("session_date")).to_pylist() if d not in days]
    for day in stray[: max(limit - len(found), 0)]:
        found.append(Finding("not_a_session", "*", day.isoformat(), "no NYSE session that day"))
    return found


def _inside_sessions(bars: pa.Table, sessions: dict[date, TradingSession]) -> bool:
    """Every bar inside its own session, checked in one pass (the bounds of each row's day
    looked up once per distinct day); the per-day pass above only runs to name offenders."""
    if bars.num_rows == 0:
        return True
    days = pc.cast(bars.column("session_date"), pa.int32()).to_numpy(zero_copy_only=False)
    distinct, inverse = np.unique(days, return_inverse=True)
    epoch = date(1970, 1, 1)
    bounds = np.zeros((distinct.size, 2), dtype=np.int64)
    for i, value in enumerate(distinct.tolist()):
        sess = sessions.get(epoch + timedelta(days=value))
        if sess is None:
            return False
        bounds[i] = (_ms(sess.pre_open), _ms(sess.post_close))
    # Truncating to milliseconds never moves a bar across a bound (they are whole minutes).
    ts = pc.cast(bars.column("ts"), pa.timestamp("ms", tz="UTC"), safe=False).cast(pa.int64())
    ts_ms = ts.to_numpy(zero_copy_only=False)
    return bool(((ts_ms >= bounds[inverse, 0]) & (ts_ms < bounds[inverse, 1])).all())


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Completeness:
    symbol: str
    day: date
    expected: int
    present: int
    missing: list[str]

    @property
    def missing_ratio(self) -> float:
        return (self.expected - self.present) / self.expected if self.expected else 0.0


def regular_completeness(
    bars: pa.Table, sessions: dict[date, TradingSession], symbols: list[str]
) -> list[Completeness]:
    """Regular-hours minutes present per (symbol, day) against the session's expected count;
    extended hours are sparse in real data and are not counted. Counting is vectorised; the
    missing minutes are listed only for the (rare) incomplete series."""
    regular = bars.filter(pc.equal(bars.column("session"), "regular"))
    counts = regular.group_by(["symbol", "session_date"]).aggregate([("ts", "count_distinct")])
    present = {
        (sym, day): n
        for sym, day, n in zip(
            counts.column("symbol").to_pylist(),
            counts.column("session_date").to_pylist(),
            counts.column("ts_count_distinct").to_pylist(),
            strict=True,
        )
    }
    report = []
    for day, sess in sessions.items():
        start = int(sess.open.timestamp() * 1000)
        expected = sess.regular_minutes
        for sym in symbols:
            have = present.get((sym, day), 0)
            missing: list[str] = []
            if have < expected:
                mask = pc.and_(
                    pc.equal(regular.column("symbol"), sym),
                    pc.equal(regular.column("session_date"), pa.scalar(day, pa.date32())),
                )
                seen = set(pc.cast(regular.filter(mask).column("ts"), pa.int64()).to_pylist())
                grid = (start + 60_000 * i for i in range(expected))
                missing = [_minute(m) for m in grid if m not in seen][:50]
            report.append(Completeness(sym, day, expected, have, missing))
    return report


def _minute(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def quote_findings(quotes: pa.Table, limit: int = 20) -> list[Finding]:
    """bid <= ask, sizes >= 0 on option quotes (nulls allowed where a feed omits a field)."""
    bid, ask = quotes.column("bid_price"), quotes.column("ask_price")
    rules = [
        (pc.fill_null(pc.greater(bid, ask), False), "crossed", "bid={bid_price} > ask={ask_price}"),
        (
            pc.fill_null(pc.less(quotes.column("bid_size"), 0), False),
            "negative_size",
            "bid_size={bid_size}",
        ),
        (
            pc.fill_null(pc.less(quotes.column("ask_size"), 0), False),
            "negative_size",
            "ask_size={ask_size}",
        ),
    ]
    found: list[Finding] = []
    for mask, rule, detail in rules:
        found += _findings(quotes, mask, rule, detail, limit - len(found))
    return found
