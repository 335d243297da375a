"""The columnar fast path of REST aggTrades answers (``agg_trade_columns``) gives exactly what
the exact path (``decode_agg_trades``) gives, and steps aside (None) for anything else."""

from __future__ import annotations

import contextlib

import orjson
import pytest

from quant_core.rest_decode import RestDecodeError, agg_trade_columns, decode_agg_trades


def _row(n: int, **over) -> dict:
    row = {"a": n, "p": "56123.45000000", "q": "0.00120000", "f": 10 * n, "l": 10 * n + 2}
    row.update({"T": 1_723_127_400_000 + n, "m": n % 2 == 0, "M": True}, **over)
    return row


def test_plain_page_gives_the_exact_paths_values() -> None:
    body = orjson.dumps(
        [_row(a, p=f"{100 + a}.{a:08d}") for a in range(1, 500)] + [_row(7, p="1.5")]
    )
    columns = agg_trade_columns(body)
    assert columns is not None
    events = decode_agg_trades(body, "btcusdt")
    got = list(zip(*(c.tolist() for c in columns), strict=True))
    expected = [
        (e.trade_id, e.first_trade_id, e.last_trade_id, e.price, e.qty, e.ts_event_ms,
         e.is_buyer_maker)
        for e in events
    ]  # fmt: skip
    assert got == expected


@pytest.mark.parametrize(
    "bad",
    [
        {"p": "0.00000000"},
        {"q": "-1.00000000"},
        {"p": 1.5},
        {"a": -1},
        {"T": 1.0},
        {"m": 1},
        {"f": 30, "l": 29},
    ],
)
def test_anything_unusual_goes_the_exact_way(bad: dict) -> None:
    body = orjson.dumps([_row(1), _row(2, **bad)])
    assert agg_trade_columns(body) is None
    with contextlib.suppress(RestDecodeError):  # the exact path names what it refuses
        decode_agg_trades(body, "BTCUSDT")


def test_missing_field_or_not_json() -> None:
    row = _row(1)
    del row["q"]
    assert agg_trade_columns(orjson.dumps([row])) is None
    assert agg_trade_columns(b"[{") is None
    assert agg_trade_columns(b"{}") is None
    assert agg_trade_columns(b"[]") is None
