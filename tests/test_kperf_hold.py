"""While a trade-id gap holds the aggregator, trades that move the watermark must not each run
``_settle`` for nothing: that cut ``add_trades`` into one-row segments and made the live job
fall ~1,000x behind during every repair (the live regression of #14)."""

from __future__ import annotations

import numpy as np

from quant_core.bars import StreamingBarAggregator

MINUTE = 60_000
T0 = 1_723_127_400_000


def _columns(ids: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, ...]:
    n = len(ids)
    return (
        np.zeros(n, np.int64), ids, ids, np.full(n, 10**10, np.int64),
        np.full(n, 10**6, np.int64), ts, np.ones(n, bool),
    )  # fmt: skip


def test_held_bars_do_not_settle_on_every_trade() -> None:
    agg = StreamingBarAggregator(lateness_ms=500)
    calls = []
    settle = agg._settle

    def counting_settle():
        calls.append(1)
        return settle()

    agg._settle = counting_settle
    agg.add_trades(("BTCUSDT",), *_columns(np.arange(1, 11), T0 + np.arange(10)))
    assert agg.hold(T0 + 5) == []  # a gap opened in the first minute
    ids = np.arange(100, 1100)
    ts = T0 + MINUTE + 1_000 + np.arange(1000) * 100  # every row moves the watermark
    assert agg.add_trades(("BTCUSDT",), *_columns(ids, ts)) == []  # the held minute waits
    assert len(calls) <= 1
    (first,) = [b for b in agg.hold(None) if b.open_time_ms == T0]  # released: emitted, whole
    assert first.trade_count == 10 and first.version == 1
