"""REST answers recorded for gap repair decode the same way in live and replay."""

from __future__ import annotations

import orjson
import pytest

from quant_core.rest_decode import (
    AGG_TRADES_PATH,
    HISTORICAL_TRADES_PATH,
    RestDecodeError,
    decode_rest,
)


def test_both_trade_endpoints_decode_to_trade_events() -> None:
    agg = orjson.dumps(
        [{"a": 7, "p": "1.50000000", "q": "2", "f": 10, "l": 12, "T": 5, "m": False, "M": True}]
    )
    (ev,) = decode_rest(AGG_TRADES_PATH, agg, "btcusdt")
    assert (ev.symbol, ev.stream, ev.trade_id, ev.first_trade_id, ev.last_trade_id) == (
        "BTCUSDT",
        "aggTrade",
        7,
        10,
        12,
    )
    assert ev.price == 150_000_000 and ev.qty == 200_000_000
    historical = orjson.dumps(
        [
            {
                "id": 11,
                "price": "1.5",
                "qty": "0.25",
                "quoteQty": "0.375",
                "time": 6,
                "isBuyerMaker": True,
                "isBestMatch": True,
            }
        ]
    )
    (ev,) = decode_rest(HISTORICAL_TRADES_PATH, historical, "BTCUSDT")
    assert (ev.stream, ev.trade_id, ev.first_trade_id, ev.last_trade_id) == ("trade", 11, 11, 11)
    assert ev.qty == 25_000_000 and ev.is_buyer_maker and ev.ts_event_ms == 6


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/api/v3/klines", b"[]", "not a trade endpoint"),
        (
            HISTORICAL_TRADES_PATH,
            b'[{"id": 1, "price": "1", "time": 2, "isBuyerMaker": true}]',
            "'qty'",
        ),
        (
            HISTORICAL_TRADES_PATH,
            b'[{"id": 1, "price": "NaN", "qty": "1", "time": 2, "isBuyerMaker": true}]',
            "row 0",
        ),
        (HISTORICAL_TRADES_PATH, b"{}", "not a JSON array"),
    ],
)
def test_bad_answers_name_the_problem(path, body, needle) -> None:
    with pytest.raises((RestDecodeError, ValueError), match=needle):
        decode_rest(path, body, "BTCUSDT")
