"""The metadata helpers every asset uses: tables and charts that the Dagster UI shows inline
(markdown under 1,000 characters), previews that show a representative slice."""

from __future__ import annotations

from datetime import date, timedelta
from urllib.parse import unquote

import pyarrow as pa

from quant_assets.metadata import (
    MD_INLINE,
    markdown_table,
    price_chart,
    representative_rows,
    smile_chart,
)
from quant_core import synthetic
from quant_core.calendar import session

DAY = session(date(2024, 11, 27))


def _bars(*symbols: str) -> pa.Table:
    return pa.concat_tables([synthetic.equity_bars(11, s, DAY) for s in symbols])


def test_a_long_table_is_cut_to_fit_inline_and_says_how_many_rows_are_left_out() -> None:
    rows = [{"symbol": f"S{i}", "detail": "x" * 40} for i in range(100)]
    text = markdown_table(rows)
    assert len(text) <= MD_INLINE
    shown = text.count("\n| S")
    assert 5 < shown < 100 and text.endswith(f"… {100 - shown} more rows")
    assert markdown_table([], empty="no findings") == "no findings"


def test_the_preview_is_regular_session_rows_of_several_symbols() -> None:
    bars = _bars("SPY", "AAPL", "MSFT")
    sample = representative_rows(bars)
    assert set(sample.column("session").to_pylist()) == {"regular"}
    assert sorted(set(sample.column("symbol").to_pylist())) == ["AAPL", "MSFT", "SPY"]
    first, last = sample.column("ts")[0].as_py(), sample.column("ts")[2].as_py()
    assert (first, last) == (DAY.open, DAY.close - timedelta(minutes=1))  # AAPL open..close


def test_a_day_chart_is_titled_fits_inline_and_shades_the_regular_session() -> None:
    bars = _bars("SPY")
    text = price_chart(bars, "SPY", DAY.day, (DAY.open, DAY.close)).value
    assert len(text) < 1000
    assert text.startswith("**SPY · 2024-11-27** · close USD, volume shares")
    svg = unquote(text.split("](data:image/svg+xml,", 1)[1].split(")", 1)[0])
    assert "<rect x=" in svg and "<polyline points=" in svg and svg.count(",") > 60


def test_an_iv_smile_has_a_line_for_calls_and_for_puts() -> None:
    chain = synthetic.option_chain(11, "SPY", DAY.day, DAY.close, 600.0)
    expiry = chain.column("expiry")[0].as_py()
    text = smile_chart(chain, "SPY", expiry).value
    assert len(text) < 1000 and unquote(text).count("<polyline") == 2
    assert "calls IV" in text and "puts IV" in text
