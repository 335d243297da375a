"""The byte-layout fast path (``quant_core/native/frames.c``) inside ``BatchDecoder`` gives exactly
what ``Normalizer.decode`` gives frame by frame, on random bursts of good frames in Binance's
layouts mixed with frames mutated byte by byte and value by value."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.decode import BatchDecoder, Normalizer
from tests.test_decode import ws_frames

SYMBOLS = ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT", "XYZUSDT"]
ints = st.one_of(
    st.integers(0, 10**13), st.sampled_from([0, 9, 10**15, 10**16, 2**63, 253402300800000])
)


@st.composite
def decimals(draw) -> str:
    whole = draw(st.sampled_from(["0", "1", "56123", "00012", "12345678", "123456789", ""]))
    frac = "".join(draw(st.lists(st.sampled_from("0123456789"), max_size=10)))
    return whole + ("." + frac if draw(st.booleans()) else "")


@st.composite
def layout_frames(draw) -> bytes:
    """A frame in one of the layouts Binance sends (numbers in every form the exact path reads,
    some of which the layouts leave to it)."""
    symbol = draw(st.sampled_from(SYMBOLS))
    kind = draw(
        st.sampled_from(["agg", "agg_futures", "book", "book_futures", "trade", "trade_ids"])
    )
    ts = draw(st.one_of(st.integers(1_600_000_000_000, 1_800_000_000_000), ints))
    p, q = draw(decimals()), draw(decimals())
    if kind.startswith("agg"):
        first = draw(ints)
        head = {"e": "aggTrade", "E": ts + 1}
        body = {"s": symbol, "a": draw(ints)} if kind == "agg" else {"a": draw(ints), "s": symbol}
        data = {**head, **body, "p": p, "q": q, "f": first, "l": first + draw(st.integers(-1, 3))}
        data |= {"T": ts, "m": draw(st.booleans())}
        if kind == "agg":
            data["M"] = True
        stream = "aggTrade"
    elif kind.startswith("book"):
        data = {"u": draw(ints), "s": symbol, "b": p, "B": q, "a": draw(decimals()), "A": q}
        if kind == "book_futures":
            data = {"e": "bookTicker", **data, "T": ts, "E": ts + 1}
        stream = "bookTicker"
    else:
        data = {"e": "trade", "E": ts + 1, "s": symbol, "t": draw(ints), "p": p, "q": q}
        if kind == "trade_ids":
            data |= {"b": draw(ints), "a": draw(ints)}
        data |= {"T": ts, "m": draw(st.booleans()), "M": True}
        stream = "trade"
    prefix = draw(st.sampled_from([symbol.lower(), "", 'a"b', "x@y", "btc usdt"]))
    return orjson.dumps({"stream": f"{prefix}@{stream}", "data": data})


INTERESTING = b'0123456789."@,:{}[]\\ \x00\x7f\xc3tfnuleE-+'


@st.composite
def mutated(draw) -> bytes:
    """A layout frame with one byte replaced, inserted or deleted, anywhere or where a value
    starts (a leading zero, a sign, a quote) or inside a number (one digit more)."""
    raw = bytearray(draw(layout_frames()))
    at = draw(st.integers(0, len(raw) - 1))
    byte = draw(st.sampled_from(list(INTERESTING)))
    action = draw(st.sampled_from(["replace", "insert", "delete", "cut", "value", "digit"]))
    if action == "value":
        starts = [i + 2 for i in range(len(raw) - 1) if raw[i : i + 2] == b'":']
        raw.insert(draw(st.sampled_from(starts)), draw(st.sampled_from(list(b'0-"1 '))))
    elif action == "digit":
        digits = [i for i, b in enumerate(raw) if 48 <= b <= 57]
        raw.insert(draw(st.sampled_from(digits)), draw(st.sampled_from(list(b"09"))))
    elif action == "replace":
        raw[at] = byte
    elif action == "insert":
        raw.insert(at, byte)
    elif action == "delete":
        del raw[at]
    else:
        raw = raw[:at]
    return bytes(raw)


def exact_and_batched(raw_frames: list[bytes], sizes: list[int], symbols: set[str] | None):
    one = Normalizer(symbols)
    expected = []
    for i, raw in enumerate(raw_frames):
        ev = one.decode(raw)
        expected.append((i, ev, None if ev is not None else one.last_reject))
    many = Normalizer(symbols)
    decoder = BatchDecoder(many)
    got, pos = [], 0
    for size in [*sizes, len(raw_frames)]:
        batch = decoder.decode(raw_frames[pos : pos + size])
        kinds = dict(batch.rejects)
        got += [(pos + i, ev, kinds.get(i)) for i, ev in batch.items(decoder.symbols)]
        pos += size
    return one, expected, many, got


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.one_of(layout_frames(), layout_frames(), mutated()), max_size=120),
    st.lists(st.integers(1, 130), max_size=4),
    st.sampled_from([None, {"btcusdt", "ETHUSDT", "1000pepeusdt"}]),
)
def test_layout_path_equals_the_exact_decoder(raw_frames, sizes, symbols) -> None:
    one, expected, many, got = exact_and_batched(raw_frames, sizes, symbols)
    assert got == expected
    assert many.rejects == one.rejects
    assert many.samples == one.samples


def test_binance_layouts_are_taken_without_the_exact_path() -> None:
    """The recorded spot and futures frames, and the plain forms, are read by the layouts (so
    the test above exercises them, not only the fallback)."""
    raw = [f for name in ("binance_spot.ws", "binance_futures.ws") for f in ws_frames(name)]
    market = [f for f in raw if b"@aggTrade" in f or b"@bookTicker" in f or b"@trade" in f]
    decoder = BatchDecoder(Normalizer())
    _, _, rest = decoder.layouts(market)
    assert market and rest == []
    _, expected, _, got = exact_and_batched(market, [], None)
    assert got == expected


AGG = (
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1723127400002,"s":"BTCUSDT",'
    b'"a":5,"p":"56000.10000000","q":"0.00100000","f":10,"l":12,"T":1723127400000,"m":true,'
    b'"M":true}}'
)
BOOK = (
    b'{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"56000.10000000",'
    b'"B":"1.00000000","a":"56000.20000000","A":"2.00000000"}}'
)
# (frame, bytes replaced, replacement): each edge the layouts must leave to the exact path or
# read exactly as it does.
EDGES = [
    (AGG, b'"E":1', b'"E":01'),
    (AGG, b'"a":5', b'"a":05'),
    (AGG, b'"a":5', b'"a":0'),
    (AGG, b'"a":5', b'"a":-5'),
    (AGG, b'"a":5', b'"a":5.0'),
    (AGG, b'"a":5', b'"a":1e3'),
    (AGG, b'"a":5', b'"a":9999999999999999'),
    (AGG, b'"a":5', b'"a":99999999999999999'),
    (AGG, b'"a":5', b'"a":9223372036854775808'),
    (AGG, b'"T":1723127400000', b'"T":253402300800000'),
    (AGG, b'"T":1723127400000', b'"T":253402300799999'),
    (AGG, b'"f":10', b'"f":13'),
    (AGG, b'"p":"56000.10000000"', b'"p":"56000.1"'),
    (AGG, b'"p":"56000.10000000"', b'"p":"56000"'),
    (AGG, b'"p":"56000.10000000"', b'"p":"56000."'),
    (AGG, b'"p":"56000.10000000"', b'"p":".1"'),
    (AGG, b'"p":"56000.10000000"', b'"p":"56000.100000000"'),
    (AGG, b'"p":"56000.10000000"', b'"p":"56000.100000001"'),
    (AGG, b'"p":"56000.10000000"', b'"p":"123456789.10000000"'),
    (AGG, b'"p":"56000.10000000"', b'"p":"12345678.10000000"'),
    (AGG, b'"p":"56000.10000000"', b'"p":"00056000.10000000"'),
    (AGG, b'"p":"56000.10000000"', b'"p":"0.00000000"'),
    (AGG, b'"p":"56000.10000000"', b'"p":"-1.00000000"'),
    (AGG, b'"p":"56000.10000000"', b'"p":"1e3"'),
    (AGG, b'"p":"56000.10000000"', b'"p":56000.1'),
    (AGG, b'"p":"56000.10000000"', b'"p":"5.6.1"'),
    (AGG, b'"s":"BTCUSDT"', b'"s":"btcusdt"'),
    (AGG, b'"s":"BTCUSDT"', b'"s":"BTC\\u0055SDT"'),
    (AGG, b'"s":"BTCUSDT"', b'"s":"XYZUSDT"'),
    (AGG, b'"s":"BTCUSDT"', b'"s":"ABCDEFGHIJKLMNOPQRSTUVWXYZ"'),
    (AGG, b'"s":"BTCUSDT"', b'"s":""'),
    (AGG, b'"s":"BTCUSDT"', b'"s":"BTC USDT"'),
    (AGG, b'"s":"BTCUSDT"', '"s":"BTCÜSDT"'.encode()),
    (AGG, b'"m":true', b'"m":false'),
    (AGG, b'"m":true', b'"m":True'),
    (AGG, b'"m":true', b'"m":1'),
    (AGG, b'"M":true', b'"M":null'),
    (AGG, b'"e":"aggTrade"', b'"e":"trade"'),
    (AGG, b'"e":"aggTrade",', b'"e":"aggTrade", '),
    (AGG, b"btcusdt@", b""),
    (AGG, b"btcusdt@", b'b"t@'),
    (AGG, b"btcusdt@", b"x@btcusdt@"),
    (AGG, b"}}", b"}} "),
    (AGG, b"}}", b"},}"),
    (AGG, b"}}", b"}"),
    (BOOK, b'"b":"56000.10000000"', b'"b":"56000.30000000"'),
    (BOOK, b'"b":"56000.10000000"', b'"b":"0.00000000"'),
    (BOOK, b'"B":"1.00000000"', b'"B":"0.00000000"'),
    (BOOK, b'"a":"56000.20000000"', b'"a":56000'),
    (BOOK, b'"u":7', b'"u":07'),
]


def test_each_edge_inside_a_burst_equals_the_exact_decoder() -> None:
    for symbols in (None, {"BTCUSDT"}):
        for frame, old, new in EDGES:
            edited = frame.replace(old, new, 1)
            assert edited != frame
            burst = [AGG, BOOK, edited, AGG.replace(b'"a":5', b'"a":6'), edited, BOOK]
            one, expected, many, got = exact_and_batched(burst, [], symbols)
            assert got == expected, edited
            assert many.rejects == one.rejects and many.samples == one.samples


def test_bursts_without_a_delimiter_or_a_layout_frame() -> None:
    for burst in ([b"no delimiters at all here"], [b"[1,2]", b""], [AGG[:40]]):
        one, expected, many, got = exact_and_batched(burst, [], None)
        assert got == expected and many.rejects == one.rejects
