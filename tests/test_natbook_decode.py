"""The compiled depth readers (quant_core/native/book.c) against the exact general path: whole
bursts of diff frames (``read_diffs``), level arrays (``read_levels``) and REST snapshots, on
random and on byte-mutated input. Whatever the bytes, the readers never crash, and the decoder's
columns, rejects and samples equal the general decoder's."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.decode import MALFORMED_JSON, MAX_MS
from quant_core.depth_decode import (
    DepthDecoder,
    DepthSnapshotError,
    decode_depth_snapshot,
    decode_depth_snapshot_general,
)
from quant_core.native.book import read_diffs, read_levels

SYMBOL = "BTCUSDT"
FORMS = ["binance"] * 6 + ["short", "zero_price", "huge"]


def text(value: int, form: str) -> str:
    whole, frac = divmod(value, 10**8)
    if form == "short":
        return f"{whole}.{frac:08d}".rstrip("0").rstrip(".") or "0"
    if form == "zero_price":
        return "0.00000000"
    if form == "huge":
        return "99999999999.00000000"  # 11 integer digits: beyond the C reader's form
    return f"{whole}.{frac:08d}"


level = st.tuples(st.integers(1, 10**18), st.integers(0, 10**12), st.sampled_from(FORMS))
sides = st.lists(level, max_size=6)


@st.composite
def frames(draw):
    uid = draw(st.integers(0, 10**6))
    frame = {
        "stream": draw(st.sampled_from(["btcusdt@depth@100ms"] * 8 + ["btcusdt@depth", "x@y"])),
        "data": {
            "e": draw(st.sampled_from(["depthUpdate"] * 9 + ["trade"])),
            "E": draw(st.sampled_from([1_700_000_000_000, 0, MAX_MS, MAX_MS + 1])),
            "s": draw(st.sampled_from([SYMBOL] * 8 + ["ETHUSDT", "btcusdt"])),
            "U": uid,
            "u": uid + draw(st.sampled_from([0, 0, 3, -1])),
            "b": [[text(p, f), text(q, f)] for p, q, f in draw(sides)],
            "a": [[text(p, f), text(q, f)] for p, q, f in draw(sides)],
        },
    }
    return orjson.dumps(frame)


def columns(batch) -> dict[str, list]:
    return {name: getattr(batch, name).tolist() for name in batch.__dataclass_fields__}


def warmed() -> DepthDecoder:
    """A decoder that has seen the symbol once (the C reader takes only known symbols)."""
    dec = DepthDecoder([SYMBOL])
    dec.decode([frame_of([["1.00000000", "1.00000000"]], [])])
    dec.rejects.clear()
    return dec


def frame_of(b, a, symbol: str = SYMBOL, uid: int = 5) -> bytes:
    return orjson.dumps(
        {
            "stream": "btcusdt@depth@100ms",
            "data": {"e": "depthUpdate", "E": 1_700_000_000_000, "s": symbol, "U": uid,
                     "u": uid + 1, "b": b, "a": a},
        }
    )  # fmt: skip


def mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        op, at = rng.randrange(3), rng.randrange(len(data))
        if op == 0:
            data[at] = rng.choice(b'0123456789.,:"[]{}-eE \\x\x00\xff')
        elif op == 1:
            del data[at]
        else:
            data.insert(at, rng.choice(b'0",]'))
    return bytes(data)


@settings(max_examples=150, deadline=None)
@given(st.lists(frames(), max_size=8), st.integers(0, 2**32))
def test_decoder_equals_the_general_decoder(burst, seed) -> None:
    rng = random.Random(seed)
    if burst and rng.random() < 0.5:
        k = rng.randrange(len(burst))
        burst[k] = mutate(burst[k], rng)
    fast, general = warmed(), warmed()
    assert columns(fast.decode(burst)) == columns(general.decode_general(burst))
    assert fast.rejects == general.rejects and fast.samples == general.samples


def test_binance_bursts_take_the_c_reader() -> None:
    """The comparison above means something: a burst in Binance's form is read by
    ``read_diffs``, whose columns are the general decoder's."""
    dec = warmed()
    burst = [frame_of([["93000.01000000", "0.50000000"]], [["93000.02000000", "0.00000000"]],
                      uid=uid) for uid in (7, 9)]  # fmt: skip
    read = read_diffs(burst, dec.table.raw_codes, MAX_MS)
    assert read is not None
    code, first, last, ts, counts, price, qty = (memoryview(c).cast("q").tolist() for c in read)
    assert (code, first, last, ts) == ([0, 0], [7, 9], [8, 10], [1_700_000_000_000] * 2)
    assert counts == [1, 1, 1, 1]
    assert price == [9_300_001_000_000, 9_300_002_000_000] * 2
    assert qty == [50_000_000, 0] * 2
    assert columns(dec.decode(burst)) == columns(DepthDecoder([SYMBOL]).decode_general(burst))
    # A symbol not seen yet, a space, an escape: the C reader declines.
    raw_codes = dec.table.raw_codes
    assert read_diffs([frame_of([], [], symbol="ETHUSDT")], raw_codes, MAX_MS) is None
    assert read_diffs([burst[0].replace(b'"b":', b'"b": ')], raw_codes, MAX_MS) is None
    assert read_diffs([burst[0].replace(b"btcusdt", b"btc\\u0075sdt")], raw_codes, MAX_MS) is None
    assert read_diffs([burst[0] + b" "], raw_codes, MAX_MS) is None
    assert read_diffs([bytearray(burst[0])], raw_codes, MAX_MS) is None


def test_random_bytes_never_crash_the_readers() -> None:
    rng = random.Random(11)
    good = frame_of([["1.00000000", "2.00000000"]] * 3, [["3.00000000", "0.00000000"]])
    raw_codes = {SYMBOL: 0}
    for _ in range(1500):
        raw = mutate(good, rng) if rng.random() < 0.8 else rng.randbytes(rng.randrange(80))
        read_diffs([raw, good], raw_codes, MAX_MS)
        read_levels([raw[raw.find(b"[") :], b"[]"])
        for cut in (len(raw) // 2, len(raw) - 1):
            read_diffs([raw[:cut]], raw_codes, MAX_MS)
            read_levels([raw[:cut]])
    with pytest.raises(TypeError):
        read_diffs([good], [], MAX_MS)
    assert read_levels([object()]) is None
    assert read_diffs(["text"], raw_codes, MAX_MS) is None


@st.composite
def snapshots(draw):
    def side(lo, hi, reverse):
        values = sorted(draw(st.sets(st.integers(lo, hi), max_size=6)), reverse=reverse)
        if len(values) > 1 and draw(st.integers(0, 5)) == 0:
            values[0], values[1] = values[1], values[0]  # out of order
        if values and draw(st.integers(0, 7)) == 0:
            values.append(values[-1])  # repeated
        return [[text(p * 10**6, draw(st.sampled_from(FORMS))), text(10**8, "binance")]
                for p in values]  # fmt: skip

    body = {
        "lastUpdateId": draw(st.integers(0, 10**9)),
        "bids": side(1, 25, True),
        "asks": side(draw(st.sampled_from([21, 26])), 40, False),  # 21: may cross
    }
    raw = orjson.dumps(body)
    return raw.replace(b",", b", ") if draw(st.integers(0, 9)) == 0 else raw


def outcome(decode, body: bytes):
    try:
        return decode(body)
    except DepthSnapshotError as exc:
        return (exc.kind, str(exc))


@settings(max_examples=150, deadline=None)
@given(snapshots())
def test_snapshot_reader_equals_the_general_one(body) -> None:
    assert outcome(decode_depth_snapshot, body) == outcome(decode_depth_snapshot_general, body)


def test_invalid_utf8_is_a_malformed_frame_not_a_crash() -> None:
    """msgspec raises UnicodeDecodeError (not a MsgspecError) on bytes that are not UTF-8: the
    fuzz test above found that it escaped the decoders."""
    good = frame_of([["1.00000000", "2.00000000"]], [])
    bad = good.replace(b"btcusdt", b"btcusd\xff")
    for decode in ("decode", "decode_general"):
        dec = warmed()
        batch = getattr(dec, decode)([bad, good])
        assert dec.rejects == {MALFORMED_JSON: 1} and batch.index.tolist() == [1]
    with pytest.raises(DepthSnapshotError, match=MALFORMED_JSON):
        decode_depth_snapshot(b'{"lastUpdateId":1,"bids":[["\xff","1"]],"asks":[]}')
