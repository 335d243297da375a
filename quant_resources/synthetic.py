"""``SyntheticMarketResource``: the seeded synthetic provider behind the embedded defaults.

It answers the same questions as ``AlpacaResource`` with frames of the same schemas, tagged
``source=synthetic``. It is selected explicitly (``QUANT_EQUITY_SOURCE=synthetic``, or the
embedded default when no Alpaca keys exist) and never stands in for a failing Alpaca.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from quant_core import synthetic
from quant_core.calendar import session, trading_days
from quant_core.tables import BARS_1M
from quant_resources.market import MarketDataResource


class SyntheticMarketResource(MarketDataResource):
    seed: int = Field(default=7, description="Same seed, same market, on every machine.")

    @property
    def source(self) -> str:
        return synthetic.SOURCE

    def stock_bars_1m(
        self, symbols: list[str], start: datetime, end: datetime, adjustment: str = "raw"
    ) -> pa.Table:
        """Bars of every session overlapping [start, end) (synthetic prices need no adjustment)."""
        frames = [
            synthetic.equity_bars(self.seed, symbol, session(day))
            for day in trading_days(start.date(), end.date())
            for symbol in symbols
        ]
        bars = pa.concat_tables(frames) if frames else BARS_1M.empty_table()
        ts = bars.column("ts")
        keep = pc.and_(
            pc.greater_equal(ts, pa.scalar(start, ts.type)), pc.less(ts, pa.scalar(end, ts.type))
        )
        bars = bars.filter(keep)
        return bars.set_column(
            bars.column_names.index("adjustment"), "adjustment", pa.array([adjustment] * len(bars))
        )

    def option_chain_snapshot(self, underlying: str, at: datetime) -> pa.Table:
        """The chain at ``at``, priced off the underlying's last bar close at or before it."""
        day = at.date()
        bars = synthetic.equity_bars(self.seed, underlying, session(day))
        ts = bars.column("ts")
        upto = bars.filter(pc.less_equal(ts, pa.scalar(at, ts.type)))
        # Before the first bar of the day the previous close is unknown here: use the open.
        spot = float(
            (upto.column("close")[-1] if upto.num_rows else bars.column("open")[0]).as_py()
        )
        return synthetic.option_chain(self.seed, underlying, day, at, spot)

    def option_bars_1m(self, symbols: list[str], start: datetime, end: datetime) -> pa.Table:
        """Minute bars of option contracts (OCC symbols), priced off the underlying's minutes."""
        frames = [
            synthetic.option_bars(self.seed, occ, session(day))
            for day in trading_days(start.date(), end.date())
            for occ in symbols
        ]
        return pa.concat_tables(frames) if frames else BARS_1M.empty_table()
