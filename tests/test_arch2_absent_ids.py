"""Ids the exchange's own REST history lacks (a page asked from the first missing id begins
after it) stop holding the bars: repair cannot bring them, so waiting would hold every bar
from then on and ask REST forever (the simulator's ``lose`` fault; the archive names them)."""

from __future__ import annotations

import orjson

from quant_core.kernel import IngestKernel

T0 = 1_723_127_400_000
MINUTE = 60_000


def _frame(a: int, t: int) -> bytes:
    data = {"e": "aggTrade", "E": t, "s": "BTCUSDT", "a": a, "p": "100.00000000",
            "q": "1.00000000", "f": a, "l": a, "T": t, "m": False, "M": True}  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@aggTrade", "data": data})


def _page(ids: list[int]) -> bytes:
    rows = [{"a": a, "p": "100.00000000", "q": "1.00000000", "f": a, "l": a, "T": T0 + a,
             "m": False, "M": True} for a in ids]  # fmt: skip
    return orjson.dumps(rows)


def test_ids_a_rest_page_skips_stop_holding_bars() -> None:
    kernel = IngestKernel(["BTCUSDT"], lateness_ms=0)
    out = kernel.frames([_frame(a, T0 + a) for a in (1, 2, 3, 7, 8)])
    assert [(g.first_id, g.last_id) for g in out.gaps] == [(4, 6)]
    later = kernel.frames([_frame(9, T0 + 2 * MINUTE)])  # the first minute is due, but held
    assert not later.bars and kernel.hold_ms() is not None
    # Asked from 4, the exchange answers from 6: 4 and 5 do not exist there; 6 fills its gap.
    params = {"symbol": "BTCUSDT", "fromId": 4, "limit": 1000}
    answer = kernel.rest("/api/v3/aggTrades", _page([6, 7, 8, 9]), "BTCUSDT", 0, params)
    assert answer.repaired == 1
    assert kernel.open_gaps() == [] and kernel.hold_ms() is None
    (bar,) = [b for b in answer.bars if b.open_time_ms == T0]
    assert bar.trade_count == 6  # ids 1, 2, 3, 6, 7, 8


def test_a_page_from_the_missing_id_itself_keeps_the_rest_of_the_gap() -> None:
    kernel = IngestKernel(["BTCUSDT"], lateness_ms=0)
    kernel.frames([_frame(a, T0 + a) for a in (1, 2, 7)])
    params = {"symbol": "BTCUSDT", "fromId": 3, "limit": 2}
    kernel.rest("/api/v3/aggTrades", _page([3, 4]), "BTCUSDT", 0, params)
    assert [(g.first_id, g.last_id) for g in kernel.open_gaps()] == [(5, 6)]
