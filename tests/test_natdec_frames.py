"""The compiled layout decoder (``quant_core/native/frames.c``) inside ``BatchDecoder`` gives
exactly what ``Normalizer.decode`` gives frame by frame, on random mixed bursts (good frames in
Binance's layouts, every reject kind, truncations, huge numbers, unicode, escapes), and any byte
string is safe to hand it."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.decode import AGG, TRADE, BatchDecoder, Normalizer
from quant_core.native import frames as native
from tests.test_decode import REJECT_CASES
from tests.test_decode_bursts import BATCH_REJECTS, CONTROL, SPLICED
from tests.test_kdec_layout import AGG as AGG_FRAME
from tests.test_kdec_layout import BOOK as BOOK_FRAME
from tests.test_kdec_layout import exact_and_batched, layout_frames, mutated

HUGE = ["9223372036854775807", "9223372036854775808", "18446744073709551616", "9" * 40, "0" * 30]
DECIMALS = [
    "92233720368.54775807",  # the largest scaled value: int64's maximum
    "92233720368.54775808",  # one unit more
    "99999999999.99999999",
    "1.000000000000000000000",  # places past the 8th, all zero
    "1.000000001",
    "0000000000000000000000000000000000001.00000000",  # long: the exact path decides
    ".10000000",
    "1.",
    "\u0661.\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660",  # Arabic-Indic digits
    "1\\u002e5",
]


def buffers(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((15, n), np.int64), np.zeros((2, n), np.int32), np.zeros((2, n), np.int8)


def edited(frame: bytes, old: bytes, new: bytes) -> bytes:
    out = frame.replace(old, new, 1)
    assert out != frame
    return out


@st.composite
def extreme_frames(draw) -> bytes:
    """A layout frame with one value replaced by a huge number, an odd decimal, a unicode or
    escaped symbol, or cut anywhere."""
    frame = draw(layout_frames())
    action = draw(st.sampled_from(["int", "decimal", "symbol", "cut", "bytes"]))
    if action == "int":
        key = draw(st.sampled_from([b'"a":', b'"t":', b'"u":', b'"f":', b'"l":', b'"T":', b'"E":']))
        at = frame.find(key)
        if at < 0:
            return frame
        end = at + len(key)
        stop = end
        while stop < len(frame) and frame[stop : stop + 1].isdigit():
            stop += 1
        return frame[:end] + draw(st.sampled_from(HUGE)).encode() + frame[stop:]
    if action == "decimal":
        key = draw(st.sampled_from([b'"p":"', b'"q":"', b'"b":"', b'"B":"', b'"a":"', b'"A":"']))
        at = frame.find(key)
        if at < 0:
            return frame
        end = at + len(key)
        stop = frame.find(b'"', end)
        return frame[:end] + draw(st.sampled_from(DECIMALS)).encode() + frame[stop:]
    if action == "symbol":
        symbol = draw(
            st.sampled_from(["BTCÜSDT", "BTC\\u0055SDT", 'A\\"B', "B\x00C", "\U0001f600"])
        )
        at = frame.find(b'"s":"') + 5
        return frame[:at] + symbol.encode() + frame[frame.find(b'"', at) :]
    if action == "cut":
        return frame[: draw(st.integers(0, len(frame)))]
    return draw(st.binary(max_size=300))


MIXED = st.one_of(
    layout_frames(),
    layout_frames(),
    mutated(),
    extreme_frames(),
    st.sampled_from([raw for raw, _ in REJECT_CASES] + [raw for raw, _ in BATCH_REJECTS]),
    st.sampled_from(CONTROL + SPLICED),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(MIXED, max_size=150),
    st.lists(st.integers(1, 160), max_size=4),
    st.sampled_from([None, {"btcusdt", "ETHUSDT", "1000pepeusdt"}]),
)
def test_native_path_equals_the_exact_decoder(raw_frames, sizes, symbols) -> None:
    one, expected, many, got = exact_and_batched(raw_frames, sizes, symbols)
    assert got == expected
    assert many.rejects == one.rejects
    assert many.samples == one.samples


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize("key", [b'"a":5', b'"f":10', b'"l":12', b'"T":1723127400000', b'"E":1'])
def test_ids_and_times_beyond_int64_go_the_exact_way(key: bytes, value: str) -> None:
    frame = edited(AGG_FRAME, key, key.split(b":")[0] + b":" + value.encode())
    one, expected, many, got = exact_and_batched([AGG_FRAME, frame, BOOK_FRAME], [], None)
    assert got == expected and many.rejects == one.rejects
    _, _, rest = BatchDecoder(Normalizer()).layouts([AGG_FRAME, frame, BOOK_FRAME])
    if int(value) > 2**63 - 1 or value.startswith("0"):
        assert rest == [1]


@pytest.mark.parametrize("value", DECIMALS)
@pytest.mark.parametrize("key", [b'"p":"56000.10000000"', b'"q":"0.00100000"'])
def test_decimals_at_the_edges(key: bytes, value: str) -> None:
    frame = edited(AGG_FRAME, key, key[:5] + value.encode() + b'"')
    book = edited(BOOK_FRAME, b'"B":"1.00000000"', b'"B":"' + value.encode() + b'"')
    one, expected, many, got = exact_and_batched([AGG_FRAME, frame, book, BOOK_FRAME], [], None)
    assert got == expected and many.rejects == one.rejects


def test_the_largest_scaled_value_is_taken_exactly() -> None:
    frame = edited(AGG_FRAME, b'"q":"0.00100000"', b'"q":"92233720368.54775807"')
    decoder = BatchDecoder(Normalizer())
    trades, _, rest = decoder.layouts([frame])
    assert rest == [] and trades.qty.tolist() == [2**63 - 1]
    assert decoder.decode([frame]).events(decoder.symbols) == [Normalizer().decode(frame)]


def test_columns_of_every_layout() -> None:
    """Values land in the right columns: trade ids as first=last, spot book times -1."""
    trade = orjson.dumps(
        {"stream": "btcusdt@trade", "data": {"e": "trade", "E": 2, "s": "BTCUSDT", "t": 9,
         "p": "1.5", "q": "2", "T": 1, "m": False, "M": True}}
    )  # fmt: skip
    futures_book = orjson.dumps(
        {"stream": "btcusdt@bookTicker", "data": {"e": "bookTicker", "u": 4, "s": "BTCUSDT",
         "b": "1", "B": "0", "a": "2", "A": "3", "T": 5, "E": 6}}
    )  # fmt: skip
    decoder = BatchDecoder(Normalizer())
    trades, books, rest = decoder.layouts([AGG_FRAME, BOOK_FRAME, trade, futures_book])
    assert rest == []
    assert trades.index.tolist() == [0, 2] and trades.kind.tolist() == [AGG, TRADE]
    assert trades.trade_id.tolist() == [5, 9]
    assert trades.first.tolist() == [10, 9] and trades.last.tolist() == [12, 9]
    assert trades.price.tolist() == [5600010000000, 150000000]
    assert trades.qty.tolist() == [100000, 200000000]
    assert trades.ts.tolist() == [1723127400000, 1] and trades.maker.tolist() == [True, False]
    assert books.index.tolist() == [1, 3] and books.update_id.tolist() == [7, 4]
    assert books.bid.tolist() == [5600010000000, 100000000]
    assert books.bid_qty.tolist() == [100000000, 0]
    assert books.ask_qty.tolist() == [200000000, 300000000]
    assert books.ts.tolist() == [-1, 5]
    assert [decoder.symbols[c] for c in trades.code.tolist() + books.code.tolist()] == [
        "BTCUSDT"
    ] * 4


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=400), extreme_frames(), mutated()), max_size=60))
def test_any_bytes_are_safe(raw_frames) -> None:
    """Arbitrary bytes (and frames cut anywhere) never crash the C pass; every frame is either
    a row or listed for the exact path, once."""
    n = len(raw_frames)
    i64, i32, i8 = buffers(n)
    nt, nb, nr = native.decode(raw_frames, lambda s: 0, i64, i32, i8)
    taken = sorted(i64[0, :nt].tolist() + i64[7, :nb].tolist() + i64[14, :nr].tolist())
    assert taken == list(range(n))


def test_objects_that_are_not_bytes_go_the_exact_way() -> None:
    frames = [AGG_FRAME, bytearray(AGG_FRAME), AGG_FRAME.decode(), None, memoryview(AGG_FRAME)]
    n = len(frames)
    i64, i32, i8 = buffers(n)
    assert native.decode(frames, lambda s: 0, i64, i32, i8) == (1, 0, 4)
    assert i64[14, :4].tolist() == [1, 2, 3, 4]


def test_bad_buffers_and_a_failing_lookup_raise() -> None:
    frames = [AGG_FRAME, BOOK_FRAME]
    i64, i32, i8 = buffers(2)
    with pytest.raises(ValueError, match="i64"):
        native.decode(frames, lambda s: 0, np.zeros((14, 2), np.int64), i32, i8)
    with pytest.raises(ValueError, match="i32"):
        native.decode(frames, lambda s: 0, i64, np.zeros(3, np.int32), i8)
    with pytest.raises(BufferError):
        native.decode(frames, lambda s: 0, i64, i32, b"read-only")
    with pytest.raises(TypeError):
        native.decode(tuple(frames), lambda s: 0, i64, i32, i8)

    def broken(symbol: str) -> int:
        raise RuntimeError(f"no table for {symbol}")

    with pytest.raises(RuntimeError, match="BTCUSDT"):
        native.decode(frames, broken, i64, i32, i8)
    with pytest.raises(ValueError, match="symbol code"):
        native.decode(frames, lambda s: 2**40, i64, i32, i8)
