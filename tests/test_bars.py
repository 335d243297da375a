"""1m bars: Binance kline equality, streaming == batch, finality, lateness and versioning."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.bars import (
    BARS_1M_VERSIONED,
    BarRecord,
    StreamingBarAggregator,
    aggregate_trades,
    bars_to_arrow,
    div_half_even,
)
from quant_core.contracts import Bar
from quant_core.decode import BookTickerEvent, Normalizer, TradeEvent
from quant_core.formats.binance import parse_combined_frame
from quant_core.tables import BARS_1M
from tests.test_decode import ws_frames

MINUTE = 60_000
T0 = 1723127400000  # 2024-08-08 14:30:00 UTC, a minute start


def trades_table(events: list[TradeEvent], price_as: str = "decimal") -> pa.Table:
    def col(values: list[int]) -> pa.Array:
        if price_as == "int":
            return pa.array(values, pa.int64())
        decimals = [Decimal(v).scaleb(-8) for v in values]
        if price_as == "string":
            return pa.array([f"{d:f}" for d in decimals], pa.string())
        return pa.array(decimals, pa.decimal128(38, 8))

    return pa.table(
        {
            "symbol": [e.symbol for e in events],
            "trade_id": pa.array([e.trade_id for e in events], pa.int64()),
            "first_trade_id": pa.array([e.first_trade_id for e in events], pa.int64()),
            "last_trade_id": pa.array([e.last_trade_id for e in events], pa.int64()),
            "price": col([e.price for e in events]),
            "qty": col([e.qty for e in events]),
            "ts_event": pa.array([e.ts_event_ms for e in events], pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "is_buyer_maker": [e.is_buyer_maker for e in events],
        }
    )


def stream_all(
    events: list[TradeEvent], lateness_ms: int = 2000, retain_ms: int = 15 * MINUTE
) -> list[BarRecord]:
    agg = StreamingBarAggregator(lateness_ms=lateness_ms, retain_ms=retain_ms)
    out = []
    for ev in events:
        out.extend(agg.add_trade(ev))
    out.extend(agg.flush(2**62))
    return out


def latest(records: list[BarRecord]) -> list[BarRecord]:
    """The highest version of every bar, sorted as the batch output is."""
    best: dict[tuple, BarRecord] = {}
    for rec in records:
        key = (rec.symbol, rec.open_time_ms, rec.source)
        if key not in best or rec.version > best[key].version:
            best[key] = rec
    return [best[k] for k in sorted(best)]


def as_contract(rec: BarRecord) -> Bar:
    """The contracts check the OHLC/vwap/taker invariants the records must satisfy."""
    d = lambda v: Decimal(v).scaleb(-8)  # noqa: E731
    return Bar(
        source=rec.source,
        symbol=rec.symbol,
        interval="1m",
        ts_event=datetime.fromtimestamp(rec.open_time_ms / 1000, UTC),
        ts_close=datetime.fromtimestamp(rec.close_time_ms / 1000, UTC),
        open=d(rec.open),
        high=d(rec.high),
        low=d(rec.low),
        close=d(rec.close),
        volume=d(rec.volume),
        vwap=d(rec.vwap),
        trade_count=rec.trade_count,
        quote_volume=d(rec.quote_volume),
        taker_buy_volume=d(rec.taker_buy_volume),
        taker_buy_quote_volume=d(rec.taker_buy_quote_volume),
    )


def assert_kline_equal(rec: BarRecord, kline_frame: bytes) -> None:
    kline = parse_combined_frame(kline_frame)
    k = orjson.loads(kline_frame)["data"]["k"]
    scale = lambda v: int(v * 10**8)  # noqa: E731
    got = (rec.symbol, rec.open_time_ms, rec.close_time_ms, rec.first_trade_id, rec.last_trade_id)
    assert got == (kline.symbol, k["t"], k["T"], k["f"], k["L"])
    assert (rec.open, rec.high, rec.low, rec.close) == tuple(
        scale(v) for v in (kline.open, kline.high, kline.low, kline.close)
    )
    assert rec.volume == scale(kline.volume)
    assert rec.quote_volume == scale(kline.quote_volume)
    assert rec.trade_count == kline.trade_count
    assert rec.taker_buy_volume == scale(kline.taker_buy_volume)
    assert rec.taker_buy_quote_volume == scale(kline.taker_buy_quote_volume)


# -- Binance kline equality --------------------------------------------------------------------


def test_spot_fixture_kline_is_rebuilt_exactly() -> None:
    frames = ws_frames("binance_spot.ws")
    events = [e for e in Normalizer().decode_many(frames) if isinstance(e, TradeEvent)]
    assert [e.stream for e in events] == ["aggTrade", "trade"]
    (bar,) = stream_all(events)
    assert_kline_equal(bar, frames[-1])
    assert bars_to_arrow([bar]).equals(aggregate_trades(trades_table(events)))


def _agg_frame(a: int, f: int, last: int, p: str, q: str, t: int, m: bool) -> bytes:
    data = {"e": "aggTrade", "E": t + 3, "s": "BTCUSDT", "a": a, "p": p, "q": q, "f": f,
            "l": last, "T": t, "m": m, "M": True}  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@aggTrade", "data": data})


# Four aggTrades, arriving out of trade-id order with one replayed, and the 1m kline Binance
# publishes for the first minute (values worked by hand: o is the lowest f, not the first to
# arrive; n counts the trades inside the aggTrades, 2 + 1 + 3; q = 30000.005 + 14999.875 +
# 6000.1 = 50999.98; V/Q cover the two taker buys, m=false).
FOCUSED_TRADES = [
    _agg_frame(101, 1002, 1002, "59999.50000000", "0.25000000", T0 + 1_000, True),
    _agg_frame(100, 1000, 1001, "60000.01000000", "0.50000000", T0 + 500, False),
    _agg_frame(102, 1003, 1005, "60001.00000000", "0.10000000", T0 + 59_999, False),
    _agg_frame(100, 1000, 1001, "60000.01000000", "0.50000000", T0 + 500, False),
    _agg_frame(103, 1006, 1006, "60002.00000000", "1.00000000", T0 + MINUTE, True),
]
FOCUSED_KLINE = orjson.dumps(
    {
        "stream": "btcusdt@kline_1m",
        "data": {
            "e": "kline", "E": T0 + MINUTE + 10, "s": "BTCUSDT",
            "k": {
                "t": T0, "T": T0 + 59_999, "s": "BTCUSDT", "i": "1m", "f": 1000, "L": 1005,
                "o": "60000.01000000", "c": "60001.00000000", "h": "60001.00000000",
                "l": "59999.50000000", "v": "0.85000000", "n": 6, "x": True,
                "q": "50999.98000000", "V": "0.60000000", "Q": "36000.10500000", "B": "0",
            },
        },
    }
)  # fmt: skip


def test_focused_fixture_matches_binance_kline() -> None:
    events = Normalizer().decode_many(FOCUSED_TRADES)
    agg = StreamingBarAggregator(lateness_ms=2000)
    out = [rec for ev in events for rec in agg.add_trade(ev)]
    assert out == []  # the watermark (T0 + 60s) has not passed close + lateness yet
    (first,) = agg.advance(T0 + MINUTE + 2000)
    assert first.version == 1 and agg.duplicates == 1
    assert_kline_equal(first, FOCUSED_KLINE)
    assert first.vwap == div_half_even(50999_98 * 10**14, 85 * 10**6) == 5999997647059
    (second,) = agg.flush(T0 + 2 * MINUTE)
    assert (second.open_time_ms, second.open, second.trade_count) == (T0 + MINUTE, 6000200000000, 1)
    assert bars_to_arrow([first, second]).equals(aggregate_trades(trades_table(events)))


# -- finality, lateness, versions, flush ---------------------------------------------------------


def trade(
    tid: int, ts: int, price: int = 100 * 10**8, qty: int = 10**8, symbol: str = "BTCUSDT",
    maker: bool = False, last: int | None = None,
) -> TradeEvent:  # fmt: skip
    return TradeEvent(symbol, "aggTrade", tid, tid, tid if last is None else last, price, qty,
                      ts, maker)  # fmt: skip


def test_bar_is_final_only_after_close_plus_lateness() -> None:
    agg = StreamingBarAggregator(lateness_ms=2000)
    assert agg.add_trade(trade(1, T0 + 10)) == []
    assert agg.add_trade(trade(2, T0 + MINUTE + 1_999)) == []  # watermark = close + lateness
    assert agg.advance(T0 + MINUTE + 1_999) == []
    (bar,) = agg.add_trade(trade(3, T0 + MINUTE + 2_000))  # watermark passes close + lateness
    assert (bar.open_time_ms, bar.close_time_ms, bar.version) == (T0, T0 + 59_999, 1)
    assert agg.advance(T0) == []  # a watermark never goes back


def test_quiet_symbol_closes_on_the_shared_exchange_clock() -> None:
    agg = StreamingBarAggregator(lateness_ms=0)
    agg.add_trade(trade(1, T0 + 5, symbol="XRPUSDT"))
    (bar,) = agg.add_trade(trade(7, T0 + MINUTE + 1, symbol="BTCUSDT"))
    assert bar.symbol == "XRPUSDT"


def test_late_trade_reemits_a_corrected_version() -> None:
    agg = StreamingBarAggregator(lateness_ms=1000)
    agg.add_trade(trade(10, T0 + 100, price=100 * 10**8))
    (v1,) = agg.advance(T0 + MINUTE + 1_001)
    (v2,) = agg.add_trade(trade(9, T0 + 50_000, price=90 * 10**8, maker=True))
    assert v2.version == 2
    assert v2 == replace(
        v1,
        version=2,
        open=90 * 10**8,  # trade 9 comes first in trade-id order, though it arrived last
        low=90 * 10**8,
        volume=2 * 10**8,
        quote_volume=190 * 10**8,
        vwap=95 * 10**8,
        trade_count=2,
        first_trade_id=9,
    )
    assert agg.add_trade(trade(9, T0 + 50_000)) == []  # a replayed late trade changes nothing
    assert agg.duplicates == 1
    (v3,) = agg.add_trade(trade(11, T0 + 59_000, price=95 * 10**8))
    assert (v3.version, v3.close, v3.last_trade_id) == (3, 95 * 10**8, 11)


def test_trade_beyond_retention_is_counted_not_applied() -> None:
    agg = StreamingBarAggregator(lateness_ms=0, retain_ms=MINUTE)
    agg.add_trade(trade(1, T0))
    agg.add_trade(trade(2, T0 + MINUTE))
    assert agg.open_bars() == 2
    agg.advance(T0 + 3 * MINUTE - 1)  # past close + lateness + retain of the first bar only
    assert agg.open_bars() == 1
    assert agg.add_trade(trade(0, T0 + 30)) == []
    assert agg.dropped_late == 1


def test_late_trade_for_an_empty_final_minute_emits_version_one() -> None:
    agg = StreamingBarAggregator(lateness_ms=0)
    agg.add_trade(trade(5, T0 + 3 * MINUTE))
    (bar,) = agg.add_trade(trade(4, T0 + MINUTE + 7))
    assert (bar.open_time_ms, bar.version, bar.trade_count) == (T0 + MINUTE, 1, 1)


def test_flush_emits_ended_minutes_never_the_open_one() -> None:
    agg = StreamingBarAggregator(lateness_ms=5000)
    agg.add_trade(trade(1, T0 + 1, symbol="ETHUSDT"))
    agg.add_trade(trade(2, T0 + 2))
    agg.add_trade(trade(3, T0 + MINUTE + 500))  # the running minute
    out = agg.flush(T0 + MINUTE + 1_000)
    assert [(b.symbol, b.open_time_ms, b.version) for b in out] == [
        ("BTCUSDT", T0, 1),
        ("ETHUSDT", T0, 1),
    ]
    assert agg.flush(T0 + MINUTE + 1_000) == []  # nothing twice
    assert agg.flush(T0 + 2 * MINUTE - 1) == []  # close_time < now, strictly
    (late,) = agg.add_trade(trade(0, T0 + 3))  # after a flush, a correction, not a silent edit
    assert (late.open_time_ms, late.version, late.trade_count) == (T0, 2, 2)
    (last,) = agg.flush(T0 + 2 * MINUTE)
    assert (last.open_time_ms, last.version) == (T0 + MINUTE, 1)
    assert agg.advance(T0 + 10 * MINUTE) == []  # flushed bars are not emitted again


def test_mid_bars_from_book_tickers() -> None:
    agg = StreamingBarAggregator(lateness_ms=0, mode="mid", source="binance_mid")

    def book(u: int, bid: int, ask: int, ts: int | None = None) -> BookTickerEvent:
        return BookTickerEvent("BTCUSDT", u, bid, 5, ask, 7, ts)

    assert agg.add_book_ticker(book(2, 100, 103), ts_ms=T0 + 10) == []  # mid 101.5 -> 102
    assert agg.add_book_ticker(book(1, 100, 101), ts_ms=T0 + 20) == []  # 100.5 -> 100 (even)
    assert agg.add_book_ticker(book(3, 90, 94, ts=T0 + 30), ts_ms=T0 + 999) == []  # T wins
    (bar,) = agg.advance(T0 + MINUTE)
    assert (bar.open, bar.high, bar.low, bar.close) == (100, 102, 92, 92)
    assert (bar.volume, bar.quote_volume, bar.vwap, bar.trade_count) == (0, 0, None, 3)
    assert (bar.source, bar.first_trade_id, bar.last_trade_id) == ("binance_mid", 1, 3)
    assert bars_to_arrow([bar]).column("vwap").null_count == 1
    with pytest.raises(ValueError, match="ts_ms"):
        agg.add_book_ticker(book(4, 1, 2))
    with pytest.raises(ValueError, match="mode"):
        agg.add_trade(trade(1, T0))
    with pytest.raises(ValueError, match="mode"):
        StreamingBarAggregator().add_book_ticker(book(4, 1, 2), ts_ms=T0)


# -- rounding and Arrow ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num", "den", "want"),
    [(5, 2, 2), (7, 2, 4), (6, 4, 2), (10, 4, 2), (11, 4, 3), (0, 3, 0), (2, 3, 1), (1, 3, 0)],
)
def test_div_half_even(num: int, den: int, want: int) -> None:
    assert div_half_even(num, den) == want


@pytest.mark.parametrize("price_as", ["decimal", "string", "int"])
def test_half_even_ties_agree_between_streaming_and_batch(price_as: str) -> None:
    # 2.00000001 x 0.5 = 1.000000005: a tie at 8 places, rounded to the even 1.00000000.
    events = [trade(1, T0, price=200000001, qty=50000000), trade(2, T0 + 1, price=3, qty=50000000)]
    (bar,) = stream_all(events)
    assert bar.quote_volume == 100000002  # 1.000000005 + 0.000000015 = 1.00000002 exactly
    (single,) = stream_all(events[:1])
    assert single.quote_volume == 100000000
    for evs in (events, events[:1]):
        table = aggregate_trades(trades_table(evs, price_as))
        assert table.equals(bars_to_arrow(latest(stream_all(evs))))


def test_bars_to_arrow_schema_and_overflow() -> None:
    (bar,) = stream_all([trade(1, T0)])
    table = bars_to_arrow([bar])
    assert table.schema.equals(BARS_1M_VERSIONED)
    assert table.select(BARS_1M.names).schema.equals(BARS_1M)
    row = table.to_pylist()[0]
    assert row["session_date"].isoformat() == "2024-08-08"
    assert (row["session"], row["adjustment"], row["adj_factor"]) == ("continuous", "raw", 1.0)
    assert row["vwap"] == Decimal("100")
    with pytest.raises(OverflowError):
        bars_to_arrow([replace(bar, quote_volume=2**63)])


def test_batch_rejects_inexact_or_untyped_input() -> None:
    good = trades_table([trade(1, T0)])
    with pytest.raises(TypeError, match="float"):
        aggregate_trades(good.set_column(4, "price", pa.array([1.5])))
    with pytest.raises(ValueError, match="8 decimal"):
        aggregate_trades(good.set_column(4, "price", pa.array(["1.123456789"])))
    with pytest.raises(ValueError, match="non-positive"):
        aggregate_trades(good.set_column(4, "price", pa.array(["0"])))
    with pytest.raises(ValueError, match="nulls"):
        aggregate_trades(good.set_column(4, "price", pa.array([None], pa.string())))
    naive = pa.array([T0], pa.int64()).cast(pa.timestamp("ms"))
    with pytest.raises(TypeError, match="UTC"):
        aggregate_trades(good.set_column(6, "ts_event", naive))
    with pytest.raises(ValueError, match="lack"):
        aggregate_trades(good.drop_columns(["qty"]))
    assert aggregate_trades(good.slice(0, 0)).schema.equals(BARS_1M_VERSIONED)


def test_batch_without_id_ranges_and_with_microsecond_times() -> None:
    events = [trade(1, T0 + 59_999), trade(2, T0 + MINUTE, price=101 * 10**8)]
    table = trades_table(events).drop_columns(["first_trade_id", "last_trade_id"])
    micros = pa.array([(T0 + 59_999) * 1000 + 999, (T0 + MINUTE) * 1000], pa.int64())
    table = table.set_column(
        table.column_names.index("ts_event"), "ts_event", micros.cast(pa.timestamp("us", "UTC"))
    )
    assert aggregate_trades(table).equals(bars_to_arrow(stream_all(events)))


# -- streaming == batch, generated -------------------------------------------------------------


@st.composite
def trade_sequences(draw) -> tuple[list[TradeEvent], list[TradeEvent]]:
    """(trades in exchange order, the same with duplicates in arrival order within lateness)."""
    lateness = 2000
    events: list[TradeEvent] = []
    for symbol in draw(st.sets(st.sampled_from(["BTCUSDT", "ETHUSDT", "XRPUSDT"]), min_size=1)):
        aggregated = draw(st.booleans())
        tid = draw(st.integers(min_value=0, max_value=10**12))
        ts = T0 + draw(st.integers(min_value=-MINUTE, max_value=MINUTE))
        price = draw(st.integers(min_value=1, max_value=10**14))
        for _ in range(draw(st.integers(min_value=1, max_value=40))):
            span = draw(st.integers(min_value=0, max_value=4)) if aggregated else 0
            ts += draw(st.sampled_from([0, 1, 7, 999, 15_000, 59_999, 60_000, 150_000]))
            price = max(1, price + draw(st.integers(min_value=-(10**9), max_value=10**9)))
            qty = draw(st.integers(min_value=1, max_value=10**12))
            events.append(
                TradeEvent(
                    symbol,
                    "aggTrade" if aggregated else "trade",
                    tid,
                    tid,
                    tid + span,
                    price,
                    qty,
                    ts,
                    draw(st.booleans()),
                )
            )
            tid += span + 1 + draw(st.sampled_from([0, 0, 0, 5]))
    arrivals = list(events)
    for ev in draw(st.lists(st.sampled_from(events), max_size=8)):
        # Replays, and a conflicting "duplicate" (same id and minute, other values): first wins.
        other = draw(st.booleans())
        arrivals.append(msgspec.structs.replace(ev, price=ev.price + 1) if other else ev)
    rng = random.Random(draw(st.integers(min_value=0, max_value=2**32)))
    keyed = [(ev.ts_event_ms + rng.randint(0, lateness), i, ev) for i, ev in enumerate(arrivals)]
    return events, [ev for *_, ev in sorted(keyed, key=lambda k: (k[0], k[1]))]


@settings(max_examples=300, deadline=None)
@given(trade_sequences(), st.sampled_from(["decimal", "string", "int"]))
def test_streaming_equals_batch(
    sequence: tuple[list[TradeEvent], list[TradeEvent]], price_as: str
) -> None:
    _, arrivals = sequence
    records = stream_all(arrivals, lateness_ms=2000)
    assert all(r.version == 1 for r in records), "arrivals within lateness never re-version"
    batch = aggregate_trades(trades_table(arrivals, price_as))
    streamed = bars_to_arrow(latest(records))
    assert streamed.equals(batch), (streamed.to_pylist(), batch.to_pylist())
    for rec in records[:5]:
        as_contract(rec)


@settings(max_examples=150, deadline=None)
@given(trade_sequences(), st.randoms(use_true_random=False))
def test_late_corrections_converge_to_the_batch_bars(
    sequence: tuple[list[TradeEvent], list[TradeEvent]], rng: random.Random
) -> None:
    events, _ = sequence
    shuffled = list(events)
    rng.shuffle(shuffled)  # any order: most bars get final early and are corrected later
    records = stream_all(shuffled, lateness_ms=0, retain_ms=2**40)
    batch = aggregate_trades(trades_table(shuffled))
    assert (
        bars_to_arrow(latest(records))
        .drop_columns(["version"])
        .equals(batch.drop_columns(["version"]))
    )
    versions: dict[tuple, list[int]] = {}
    for rec in records:
        versions.setdefault((rec.symbol, rec.open_time_ms), []).append(rec.version)
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())


def test_fixture_frames_streaming_equals_batch() -> None:
    frames = [f for name in ("binance_spot.ws", "hftbacktest.txt") for f in ws_frames(name)]
    events = [e for e in Normalizer().decode_many(frames) if isinstance(e, TradeEvent)]
    assert aggregate_trades(trades_table(events)).equals(bars_to_arrow(latest(stream_all(events))))
