"""``BatchDecoder`` (many frames at once) gives exactly what ``Normalizer.decode`` gives."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.decode import BatchDecoder, Normalizer, scaled, scaled_texts
from tests.test_decode import (
    BAD_VALUES,
    REJECT_CASES,
    agg,
    mutated_frames,
    valid_frames,
    ws_frames,
)

CONTROL = [b'{"result":null,"id":1}', b'{"error":{"code":2,"msg":"x"},"id":3}', b"[1,2]", b""]
# Frames that only parse when joined with a neighbour: each must still be rejected alone.
SPLICED = [
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","s":"BTCUSDT","z":"',
    b'"}}',
    b'{"stream":"x@trade"},{"stream":"y@trade"}',
    b" ",
]
BAD_STRINGS = [v for v in BAD_VALUES if isinstance(v, str)] + ["1.0000000", "12345678901.00000000"]


def eight_places(frame: dict) -> dict:
    """Binance's own number format (8 decimals): the form the batch decodes without help."""
    for key in ("p", "q", "b", "B", "a", "A"):
        value = frame["data"].get(key)
        if isinstance(value, str):
            frame["data"][key] = f"{Decimal(value):.8f}"
    return frame


fast_frames = valid_frames().map(eight_places)


@st.composite
def typed_mutations(draw) -> bytes:
    """Well-formed frames whose values are wrong in ways the batch's own checks must catch
    (every field keeps the JSON type the batch decoder's struct expects)."""
    frame = draw(fast_frames)
    data = frame["data"]
    kind = frame["stream"].split("@")[1]
    prices = ["p", "q"] if kind != "bookTicker" else ["b", "B", "a", "A"]
    actions = ["number", "zero", "drop", "e", "symbol", "stream", "ids", "cross"]
    action = draw(st.sampled_from(actions))
    if action == "zero":
        data[draw(st.sampled_from(prices))] = "0.00000000"
    elif action == "number":
        data[draw(st.sampled_from(prices))] = draw(st.sampled_from(BAD_STRINGS))
    elif action == "drop":
        del data[draw(st.sampled_from(sorted(k for k in data if k not in ("E", "M"))))]
    elif action == "e":
        data["e"] = draw(st.sampled_from(["trade", "aggTrade", "kline", "bookTicker"]))
    elif action == "symbol":
        data["s"] = draw(st.sampled_from(["BTC USDT", "XYZUSDT", "btcusdt", ""]))
    elif action == "stream":
        suffix = draw(st.sampled_from(["trade", "aggTrade", "bookTicker", "kline_1m", "x"]))
        frame["stream"] = frame["stream"].split("@")[0] + "@" + suffix
    elif action == "ids" and kind == "aggTrade":
        data["f"], data["l"] = data["l"] + 1, data["f"]
    elif action == "ids":
        data["a" if kind == "bookTicker" else "t"] = "5"
        if kind == "bookTicker":
            data["a"] = 5
    else:
        if kind == "bookTicker":
            data["b"], data["a"] = "2.00000000", "1.00000000"
        else:
            data["a"] = "7"
    return orjson.dumps(frame)


frames = st.one_of(
    valid_frames().map(orjson.dumps),
    valid_frames().map(orjson.dumps),
    mutated_frames(),
    st.sampled_from(CONTROL + SPLICED),
    st.binary(max_size=60),
)


def both(raw_frames: list[bytes], sizes: list[int], symbols: set[str] | None = None):
    one = Normalizer(symbols)
    expected = [one.decode(f) for f in raw_frames]
    many = Normalizer(symbols)
    decoder = BatchDecoder(many)
    got, pos = [], 0
    for size in sizes:
        batch = decoder.decode(raw_frames[pos : pos + size])
        got.extend(batch.events(decoder.symbols))
        pos += size
    return one, [e for e in expected if e is not None], many, got


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=80), st.lists(st.integers(1, 90), min_size=1, max_size=6))
def test_batches_equal_frame_by_frame(raw_frames: list[bytes], sizes: list[int]) -> None:
    sizes = [*sizes, len(raw_frames)]
    one, expected, many, got = both(raw_frames, sizes)
    assert got == expected
    assert many.rejects == one.rejects
    assert many.samples == one.samples


@settings(max_examples=100, deadline=None)
@given(st.lists(valid_frames().map(orjson.dumps), min_size=1, max_size=200))
def test_symbol_filter_and_large_valid_batches(raw_frames: list[bytes]) -> None:
    one, expected, many, got = both(raw_frames, [len(raw_frames)], {"btcusdt", "ETHUSDT"})
    assert got == expected
    assert many.rejects == one.rejects


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(fast_frames.map(orjson.dumps), typed_mutations()), max_size=300),
    st.sampled_from([None, {"btcusdt", "ETHUSDT", "XYZUSDT"}]),
)
def test_bad_values_in_well_formed_batches(raw_frames: list[bytes], symbols) -> None:
    one, expected, many, got = both(raw_frames, [len(raw_frames)], symbols)
    assert got == expected
    assert many.rejects == one.rejects
    assert many.samples == one.samples


def test_frames_that_only_parse_together_are_rejected() -> None:
    valid = orjson.dumps(orjson.loads(agg_frame()))
    # The first frame ends inside a string that the second closes (together: one valid
    # object); the third holds two objects. Joined, the count still matches: only the
    # per-frame lengths show that no element is a frame of its own.
    tricky = [valid[:-1] + b',"z":"', b'"}', valid + b"," + valid]
    _, expected, many, got = both(tricky, [3])
    assert got == expected == []
    assert sum(many.rejects.values()) == 3


def agg_frame() -> bytes:
    return agg()


def book(**changes) -> bytes:
    data = {"u": 1, "s": "BTCUSDT", "b": "1.00000000", "B": "1.00000000", "a": "1.00000000"}
    data = {**data, "A": "1.00000000", **changes}
    return orjson.dumps({"stream": "btcusdt@bookTicker", "data": data})


BATCH_REJECTS = [
    *REJECT_CASES,
    (book(b="0.00000000"), "bad_number"),
    (book(a="0.00000000", b="0.00000000"), "bad_number"),
    (book(b="2.00000000"), "crossed_book"),
    (book(a=5), "bad_number"),
    (book(e="trade"), "unsupported_event"),
    (agg(p="0.00000000"), "bad_number"),
    (agg(q="0.00000000"), "bad_number"),
    (agg(a="7"), "bad_number"),
    (agg(s="XYZ USDT"), "bad_field"),
    (agg(p="12345678901.00000000"), None),  # 11 integer digits: valid, taken frame by frame
]


@pytest.mark.parametrize(("raw", "kind"), BATCH_REJECTS)
def test_each_reject_inside_a_batch_of_good_frames(raw: bytes, kind: str | None) -> None:
    good = [agg(a=i, f=10 + i, l=10 + i) for i in range(100)] + [book(u=i) for i in range(100)]
    raw_frames = [*good[:50], raw, *good[50:150], raw, *good[150:]]
    one, expected, many, got = both(raw_frames, [len(raw_frames)])
    assert got == expected
    assert len(got) == 200 + (2 if kind is None else 0)
    assert many.rejects == one.rejects == ({kind: 2} if kind else {})
    assert many.samples == one.samples


def test_spliced_frames_are_rejected_one_by_one() -> None:
    one, expected, many, got = both(SPLICED * 40, [len(SPLICED) * 40])
    assert got == expected == []
    assert many.rejects == one.rejects and sum(many.rejects.values()) == len(SPLICED) * 40


def test_recorded_sample_frames() -> None:
    raw = [f for name in ("binance_spot.ws", "hftbacktest.txt") for f in ws_frames(name)]
    _, expected, _, got = both(raw, [7, 100, len(raw)])
    assert got == expected and len(got) >= 5


@given(st.lists(st.sampled_from([*(v for v in BAD_VALUES if isinstance(v, str))]), max_size=30))
def test_scaled_column_takes_only_what_scaled_takes(texts: list[str]) -> None:
    values, ok = scaled_texts([*texts, "56123.45000000", "0.00000001"])
    for text, value, good in zip([*texts, "56123.45000000", "0.00000001"], values, ok, strict=True):
        if good:
            assert value == scaled(text)
    if all(t.isascii() for t in texts):  # else the whole column takes the exact path
        assert ok[-2] and ok[-1]
