"""The fast normaliser against the validating contract path, and its reject accounting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.contracts import AggressorSide, BookTicker, Trade
from quant_core.decode import (
    PRICE_SCALE,
    REJECT_KINDS,
    BookTickerEvent,
    ControlEvent,
    Normalizer,
    TradeEvent,
    scaled,
)
from quant_core.formats.binance import parse_combined_frame

FIXTURES = Path(__file__).parent / "fixtures"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TS_INIT = datetime(2024, 8, 8, 14, 30, tzinfo=UTC)


def ws_frames(name: str) -> list[bytes]:
    """Frames of a ``.ws`` capture (first line: URL) or an hftbacktest text file."""
    lines = (FIXTURES / name).read_bytes().splitlines()
    if name.endswith(".ws"):
        return [line.split(b": ", 1)[1] for line in lines[1:]]
    return [line.split(b" ", 1)[1] for line in lines]


FIXTURE_FRAMES = [
    pytest.param(frame, id=f"{name}:{i}")
    for name in ("binance_spot.ws", "binance_futures.ws", "hftbacktest.txt")
    for i, frame in enumerate(ws_frames(name))
]


def to_ms(ts: datetime) -> int:
    # ms_to_utc goes through a float: round, do not floor, to get the integer back.
    return round((ts - EPOCH) / timedelta(milliseconds=1))


def scaled_of(value: Decimal) -> int:
    units = value * PRICE_SCALE
    assert units == units.to_integral_value()
    return int(units)


def expected_record(contract: Trade | BookTicker, stream: str) -> TradeEvent | BookTickerEvent:
    """What the fast path must return for a frame the contracts accept."""
    if isinstance(contract, Trade):
        kind = stream.split("@", 1)[1]
        first = contract.first_trade_id
        last = contract.last_trade_id
        return TradeEvent(
            symbol=contract.symbol,
            stream=kind,
            trade_id=contract.trade_id,
            first_trade_id=contract.trade_id if first is None else first,
            last_trade_id=contract.trade_id if last is None else last,
            price=scaled_of(contract.price),
            qty=scaled_of(contract.qty),
            ts_event_ms=to_ms(contract.ts_event),
            is_buyer_maker=contract.taker_side is AggressorSide.SELL,
        )
    return BookTickerEvent(
        symbol=contract.symbol,
        update_id=contract.update_id,
        bid_price=scaled_of(contract.bid_price),
        bid_qty=scaled_of(contract.bid_qty),
        ask_price=scaled_of(contract.ask_price),
        ask_qty=scaled_of(contract.ask_qty),
        ts_event_ms=None if contract.ts_event is None else to_ms(contract.ts_event),
    )


def contract_or_none(raw: bytes):
    try:
        return parse_combined_frame(raw, ts_init=TS_INIT)
    except Exception:
        return None


def assert_agrees(raw: bytes) -> TradeEvent | BookTickerEvent | None:
    """Fast accepts => contract accepts with the same values; contract rejects => fast rejects."""
    norm = Normalizer()
    fast = norm.decode(raw)
    contract = contract_or_none(raw)
    if fast is None:
        assert sum(norm.rejects.values()) == 1
        assert set(norm.rejects) <= set(REJECT_KINDS)
        return None
    assert contract is not None, f"fast path accepted a frame the contracts reject: {raw!r}"
    assert fast == expected_record(contract, orjson.loads(raw)["stream"])
    return fast


@pytest.mark.parametrize("raw", FIXTURE_FRAMES)
def test_fixture_frames_agree_with_contracts(raw: bytes) -> None:
    stream = orjson.loads(raw)["stream"]
    record = assert_agrees(raw)
    if stream.endswith(("@aggTrade", "@trade", "@bookTicker")):
        assert record is not None, f"fast path refused a fixture frame: {raw!r}"
    else:  # depth and kline frames are not the fast path's business
        assert record is None


def test_fixture_values_exact() -> None:
    agg, trade, book = (Normalizer().decode(f) for f in ws_frames("binance_spot.ws")[:3])
    assert agg == TradeEvent(
        "BTCUSDT", "aggTrade", 3100000001, 3700000010, 3700000012, 5612345000000, 1250000,
        1723127400118, False,
    )  # fmt: skip
    assert trade == TradeEvent(
        "BTCUSDT", "trade", 3700000013, 3700000013, 3700000013, 5612344000000, 200000,
        1723127400219, True,
    )  # fmt: skip
    assert book == BookTickerEvent(
        "BTCUSDT", 48000000123, 5612344000000, 120000000, 5612345000000, 40000000, None
    )
    futures = Normalizer().decode(ws_frames("binance_futures.ws")[0])
    assert futures == BookTickerEvent(
        "BTCUSDT", 600000000001, 5611010000000, 300000000, 5611020000000, 1200000000,
        1723127400495,
    )  # fmt: skip


# -- generated frames --------------------------------------------------------------------------

symbols = st.sampled_from(["BTCUSDT", "ethusdt", "XRPUSDT", "1000PEPEUSDT", "BTC-USD"])
ids = st.integers(min_value=0, max_value=2**62)
times = st.integers(min_value=1_500_000_000_000, max_value=2_200_000_000_000)


@st.composite
def decimal_strings(draw, allow_zero: bool = False) -> str:
    whole = draw(st.integers(min_value=0, max_value=10**9))
    places = draw(st.sampled_from([8, 8, 8, 0, 1, 2, 5, 10]))
    frac = draw(st.integers(min_value=0, max_value=10**places - 1)) if places else 0
    if places > 8:
        frac = frac // 10 ** (places - 8) * 10 ** (places - 8)  # exact at 8 places
    text = f"{whole}.{frac:0{places}d}" if places else str(whole)
    if not allow_zero and Decimal(text) == 0:
        text = "1.00000000"
    return text


@st.composite
def valid_frames(draw) -> dict:
    kind = draw(st.sampled_from(["aggTrade", "trade", "bookTicker", "bookTickerFutures"]))
    symbol = draw(symbols)
    if kind == "aggTrade":
        first = draw(ids)
        data = {
            "e": "aggTrade",
            "E": draw(times),
            "s": symbol,
            "a": draw(ids),
            "p": draw(decimal_strings()),
            "q": draw(decimal_strings()),
            "f": first,
            "l": first + draw(st.integers(min_value=0, max_value=50)),
            "T": draw(times),
            "m": draw(st.booleans()),
            "M": True,
        }
    elif kind == "trade":
        data = {
            "e": "trade",
            "E": draw(times),
            "s": symbol,
            "t": draw(ids),
            "p": draw(decimal_strings()),
            "q": draw(decimal_strings()),
            "T": draw(times),
            "m": draw(st.booleans()),
            "M": True,
        }
    else:
        bid = draw(decimal_strings())
        spread = Decimal(draw(st.sampled_from(["0", "0.01", "0.00000001"])))
        ask = f"{Decimal(bid) + spread:f}"
        data = {
            "u": draw(ids),
            "s": symbol,
            "b": bid,
            "B": draw(decimal_strings(allow_zero=True)),
            "a": ask,
            "A": draw(decimal_strings(allow_zero=True)),
        }
        if kind == "bookTickerFutures":
            data = {"e": "bookTicker", **data, "T": draw(times), "E": draw(times)}
        kind = "bookTicker"
    return {"stream": f"{symbol.lower()}@{kind}", "data": data}


BAD_VALUES = [
    "NaN", "nan", "Infinity", "-inf", "-1.00000000", "0", "0.00000000", "1e5", " 1.0", "1_0.5",
    "+1.5", "0.000000001", "abc", "", "1.2.3", "1..00000000", 1.5, 7, None, True, [], -1, 2**70,
    "١٢.٣٠٠٠٠٠٠٠", "9" * 5000,
]  # fmt: skip


@st.composite
def mutated_frames(draw) -> bytes:
    frame = draw(valid_frames())
    data = frame["data"]
    action = draw(st.sampled_from(["drop", "replace", "stream", "swap_e", "reorder"]))
    key = draw(st.sampled_from(sorted(data)))
    if action == "drop":
        del data[key]
    elif action == "replace":
        data[key] = draw(st.sampled_from(BAD_VALUES))
    elif action == "stream":
        frame["stream"] = draw(st.sampled_from(["btcusdt", "btcusdt@foo", "@trade", 5, None]))
    elif action == "swap_e":
        data["e"] = draw(st.sampled_from(["trade", "aggTrade", "kline", "bookTicker", 3]))
    else:  # data before stream: the typed fast path must not depend on key order
        frame = {"data": data, "stream": frame["stream"]}
    return json.dumps(frame).encode()  # orjson refuses ints beyond 64 bits


@settings(max_examples=400, deadline=None)
@given(valid_frames())
def test_generated_valid_frames_agree(frame: dict) -> None:
    raw = orjson.dumps(frame)
    assert assert_agrees(raw) is not None
    assert Normalizer().decode(raw.decode()) == Normalizer().decode(raw)  # str input too


@settings(max_examples=600, deadline=None)
@given(mutated_frames())
def test_generated_bad_frames_never_disagree(raw: bytes) -> None:
    assert_agrees(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_garbage_never_raises(raw: bytes | str) -> None:
    norm = Normalizer()
    result = norm.decode(raw)
    assert result is None or isinstance(result, ControlEvent)
    if result is None:
        assert sum(norm.rejects.values()) == 1


# -- reject kinds, samples, symbols, control frames ----------------------------------------------

AGG = {
    "e": "aggTrade", "E": 1723127400120, "s": "BTCUSDT", "a": 1, "p": "56123.45000000",
    "q": "0.01250000", "f": 10, "l": 12, "T": 1723127400118, "m": False, "M": True,
}  # fmt: skip


def agg(**changes) -> bytes:
    data = {**AGG, **changes}
    for key in [k for k, v in changes.items() if v is ...]:
        del data[key]
    return orjson.dumps({"stream": "btcusdt@aggTrade", "data": data})


REJECT_CASES = [
    (b'{"stream":"btcusdt@aggTrade","data":{', "malformed_json"),
    (b"[1,2]", "malformed_json"),
    (b'{"stream":"btcusdt@whatever","data":{}}', "unknown_stream"),
    (b'{"stream":"nosuchstream","data":{}}', "unknown_stream"),
    (b'{"stream":"btcusdt@kline_1m","data":{"e":"kline"}}', "unsupported_event"),
    (b'{"stream":"ethusdt@depth@100ms","data":{}}', "unsupported_event"),
    (agg(e="trade"), "unsupported_event"),
    (agg(p=...), "missing_field"),
    (agg(T=...), "missing_field"),
    (b'{"stream":"btcusdt@aggTrade"}', "missing_field"),
    (agg(p="NaN"), "bad_number"),
    (agg(p="Infinity"), "bad_number"),
    (agg(p="-1.00000000"), "bad_number"),
    (agg(p="0.00000000"), "bad_number"),
    (agg(q="0"), "bad_number"),
    (agg(p="abc"), "bad_number"),
    (agg(p=56123.45), "bad_number"),
    (agg(a=-5), "bad_number"),
    (agg(f=13, l=12), "bad_number"),
    (agg(p="9" * 5000 + ".00000000"), "bad_number"),
    (agg(m="yes"), "bad_field"),
    (agg(s="BTC USDT"), "bad_field"),
    (
        b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"2.00000000",'
        b'"B":"1.00000000","a":"1.00000000","A":"1.00000000"}}',
        "crossed_book",
    ),
]


@pytest.mark.parametrize(("raw", "kind"), REJECT_CASES)
def test_reject_kinds(raw: bytes, kind: str) -> None:
    norm = Normalizer()
    assert norm.decode(raw) is None
    assert norm.rejects == {kind: 1}
    assert norm.samples == {kind: raw}


def test_samples_keep_the_first_frame_of_each_kind() -> None:
    norm = Normalizer()
    first, second = agg(p="NaN"), agg(p="inf")
    assert norm.decode_many([first, agg(), second, b"{"]) == [norm.decode(agg())]
    assert norm.rejects == {"bad_number": 2, "malformed_json": 1}
    assert norm.samples == {"bad_number": first, "malformed_json": b"{"}


def test_symbol_filter_is_case_insensitive() -> None:
    norm = Normalizer(symbols={"btcusdt"})
    assert isinstance(norm.decode(agg()), TradeEvent)
    assert norm.decode(agg(s="ETHUSDT")) is None
    assert norm.decode(agg(s="btcusdt")).symbol == "BTCUSDT"
    assert norm.rejects == {"unsubscribed_symbol": 1}


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b'{"result":null,"id":1}', "result"),
        (b'{"result":["btcusdt@aggTrade"],"id":3}', "result"),
        (b'{"error":{"code":2,"msg":"Invalid request"},"id":7}', "error"),
        (b'{"e":"serverShutdown","E":1723127400000}', "serverShutdown"),
    ],
)
def test_control_frames(raw: bytes, kind: str) -> None:
    norm = Normalizer()
    event = norm.decode(raw)
    assert event == ControlEvent(kind, orjson.loads(raw))
    assert norm.rejects == {}


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("56123.45000000", 5612345000000),
        ("0.00000001", 1),
        ("3", 300000000),
        ("56110.10", 5611010000000),
        ("1.1234567800", 112345678),
        ("0.00000000", 0),
        ("1.123456789", -1),
        ("-1.0", -1),
        ("1e3", -1),
        ("nan", -1),
        (" 1", -1),
        ("1_000.00000000", -1),
        (".5", -1),
        ("5.", -1),
        ("", -1),
    ],
)
def test_scaled(text: str, units: int) -> None:
    assert scaled(text) == units


@given(st.decimals(min_value=0, max_value=10**12, places=8))
def test_scaled_matches_decimal(value: Decimal) -> None:
    assert scaled(f"{value:f}") == int(value * PRICE_SCALE)
