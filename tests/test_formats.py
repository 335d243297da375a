"""Every wire/file format the project reads parses into contracts that round-trip.

Fixtures are our own small files in the formats of ../shared/samples; the real samples are read
too when that folder is present (users who clone the project do not have it).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from quant_core.contracts import AggressorSide, Bar, BookTicker, L2Update, Session, Trade
from quant_core.formats import alpaca, binance, lean
from quant_core.formats.captures import CaptureError, read_cryptofeed, read_hftbacktest

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


def assert_round_trip(contract) -> None:
    model = type(contract)
    assert model.model_validate_json(contract.model_dump_json()) == contract


def _ns_to_utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def test_cryptofeed_spot_capture() -> None:
    url, frames = read_cryptofeed((FIXTURES / "binance_spot.ws").read_bytes().splitlines())
    assert url.startswith("wss://stream.binance.com:9443/stream?streams=")
    parsed = [binance.parse_combined_frame(raw, _ns_to_utc(ns)) for ns, raw in frames]
    assert [type(p) for p in parsed] == [Trade, Trade, BookTicker, L2Update, Bar]
    agg, trade, ticker, depth, kline = parsed
    assert (agg.trade_id, agg.first_trade_id, agg.last_trade_id, agg.trade_count) == (
        3100000001,
        3700000010,
        3700000012,
        3,
    )
    assert agg.taker_side is AggressorSide.BUY and trade.taker_side is AggressorSide.SELL
    assert agg.ts_event == datetime(2024, 8, 8, 14, 30, 0, 118000, tzinfo=UTC)
    assert ticker.ts_event is None and ticker.ts_init.year == 2024
    assert depth.bids[1].qty == 0 and depth.last_update_id == 900000103
    assert kline.trade_count == 4 and kline.ts_close.microsecond == 999000
    assert kline.volume == agg.qty + trade.qty
    for item in parsed:
        assert_round_trip(item)


def test_futures_book_ticker_carries_event_time() -> None:
    _, frames = read_cryptofeed((FIXTURES / "binance_futures.ws").read_bytes().splitlines())
    ((ns, raw),) = list(frames)
    ticker = binance.parse_combined_frame(raw, _ns_to_utc(ns))
    assert ticker.ts_event == datetime(2024, 8, 8, 14, 30, 0, 495000, tzinfo=UTC)
    assert_round_trip(ticker)


def test_hftbacktest_lines() -> None:
    rows = list(read_hftbacktest((FIXTURES / "hftbacktest.txt").read_bytes().splitlines()))
    assert rows[0][0] == 1723127400125000000
    contracts = [binance.parse_combined_frame(raw, _ns_to_utc(ns)) for ns, raw in rows]
    assert [type(c) for c in contracts] == [Trade, BookTicker]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"not json", "is not JSON"),
        (b'{"data":{}}', "lacks the combined-stream"),
        (b'{"stream":"x@aggTrade","data":{"e":"aggTrade","s":"BTCUSDT"}}', "field 'a' is missing"),
        (b'{"stream":"x@y","data":{"e":"mystery"}}', "e='mystery' is not a supported"),
        (
            b'{"stream":"x@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"abc","q":"1",'
            b'"T":1,"m":true}}',
            "wrong type",
        ),
    ],
)
def test_bad_frames_name_the_problem(raw, needle) -> None:
    with pytest.raises(binance.FrameError, match=needle.replace("(", r"\(")):
        binance.parse_combined_frame(raw, datetime.now(UTC))


def test_nan_price_in_frame_is_rejected() -> None:
    raw = (
        b'{"stream":"x@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"NaN","q":"1",'
        b'"T":1,"m":true}}'
    )
    with pytest.raises(ValueError, match="price"):
        binance.parse_combined_frame(raw)


def test_bad_capture_lines() -> None:
    with pytest.raises(CaptureError, match="line 1"):
        read_cryptofeed([b"garbage"])
    with pytest.raises(CaptureError, match="line 2"):
        list(read_hftbacktest([b"1 {}", b"abc {}"]))


def _rows(name: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO((FIXTURES / name).read_text())))


def test_lean_equity_minute() -> None:
    bars = [
        lean.parse_equity_trade_row("xyz", date(2024, 8, 8), r)
        for r in _rows("xyz_20240808_trade.csv")
    ]
    # 04:00 New York in August is 08:00 UTC (EDT); deci-cents to dollars.
    assert bars[0].ts_event == datetime(2024, 8, 8, 8, 0, tzinfo=UTC)
    assert bars[0].open == Decimal("447.91") and bars[0].session is Session.PRE
    assert bars[1].session is Session.REGULAR and bars[1].ts_event.hour == 13
    assert bars[2].session is Session.REGULAR  # 15:59 bar
    assert bars[3].session is Session.POST  # 16:00 bar
    for bar in bars:
        assert_round_trip(bar)


def test_lean_option_quotes() -> None:
    name = "20240808_xyz_minute_quote_american_call_4500000_20240816.csv"
    file = lean.OptionFile(name)
    assert file.occ_symbol == "XYZ240816C00450000"
    quotes = [lean.parse_option_quote_row(file, r) for r in _rows(name)]
    assert quotes[0].bid_price == Decimal("3.1") and quotes[0].ask_size == 40
    assert quotes[0].ts_event == datetime(2024, 8, 8, 13, 30, 59, 999000, tzinfo=UTC)
    for quote in quotes:
        assert_round_trip(quote)
    with pytest.raises(ValueError, match="not a Lean option minute CSV name"):
        lean.OptionFile("whatever.csv")


def test_lean_crypto_minute() -> None:
    bars = [
        lean.parse_crypto_trade_row("BTCUSDT", date(2024, 8, 8), r)
        for r in _rows("btcusdt_20240808_crypto_trade.csv")
    ]
    assert bars[1].ts_event == datetime(2024, 8, 8, 0, 1, tzinfo=UTC)
    for bar in bars:
        assert_round_trip(bar)


def test_alpaca_bars_and_snapshots() -> None:
    page = json.loads((FIXTURES / "alpaca_stock_bars.json").read_text())
    bars = [alpaca.parse_bar(sym, row) for sym, rows in page["bars"].items() for row in rows]
    assert bars[0].vwap == Decimal("448.113") and bars[0].session is Session.REGULAR
    assert bars[0].source == "alpaca"
    snaps = json.loads((FIXTURES / "alpaca_option_snapshots.json").read_text())["snapshots"]
    quotes = [alpaca.parse_option_snapshot(occ, snap) for occ, snap in snaps.items()]
    assert quotes[0].delta == pytest.approx(0.4102)
    assert quotes[0].ts_event.microsecond == 123456
    assert quotes[1].implied_volatility is None and quotes[1].last_price is None
    for item in [*bars, *quotes]:
        assert_round_trip(item)


samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/samples is absent")


@samples
@pytest.mark.samples
@pytest.mark.parametrize("name", ["BINANCE.ws.1.0", "BINANCE_FUTURES.ws.1.0"])
def test_real_cryptofeed_captures(name) -> None:
    _, frames = read_cryptofeed(
        (SAMPLES / "binance_ws_cryptofeed" / name).read_bytes().splitlines()
    )
    count = 0
    for ns, raw in frames:
        assert_round_trip(binance.parse_combined_frame(raw, _ns_to_utc(ns)))
        count += 1
    assert count > 100


@samples
@pytest.mark.samples
def test_real_lean_files() -> None:
    with zipfile.ZipFile(SAMPLES / "lean_equity_minute" / "spy_20230803_trade.zip") as zf:
        rows = list(csv.reader(io.TextIOWrapper(zf.open(zf.namelist()[0]))))
    bars = [lean.parse_equity_trade_row("SPY", date(2023, 8, 3), r) for r in rows]
    assert sum(b.session is Session.REGULAR for b in bars) == 390
    with zipfile.ZipFile(SAMPLES / "lean_options_minute" / "spy_20230803_quote_american.zip") as zf:
        for member in zf.namelist():
            file = lean.OptionFile(member)
            for row in csv.reader(io.TextIOWrapper(zf.open(member))):
                assert_round_trip(lean.parse_option_quote_row(file, row))
    with zipfile.ZipFile(SAMPLES / "lean_crypto_minute" / "btcbusd_20221213_trade.zip") as zf:
        rows = list(csv.reader(io.TextIOWrapper(zf.open(zf.namelist()[0]))))
    assert (
        len([lean.parse_crypto_trade_row("BTCBUSD", date(2022, 12, 13), r) for r in rows]) == 1440
    )
