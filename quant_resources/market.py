"""The one interface every historical market-data provider implements (Alpaca, synthetic).

Assets depend on ``MarketDataResource`` and never on a provider; which provider is bound is
decided once, explicitly, by the code location (see ``quant_assets.config.equity_source``).
Frames use the schemas of ``quant_core.tables`` and carry the provider's ``source``.
"""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import pyarrow as pa


class MarketDataResource(dg.ConfigurableResource):
    @property
    def source(self) -> str:
        raise NotImplementedError

    def stock_bars_1m(
        self, symbols: list[str], start: datetime, end: datetime, adjustment: str = "raw"
    ) -> pa.Table:
        """Minute bars (``BARS_1M``) of ``symbols`` with bar open in [start, end)."""
        raise NotImplementedError

    def option_chain_snapshot(self, underlying: str, at: datetime) -> pa.Table:
        """The option chain (``OPTIONS_QUOTES``) as of ``at``; live-only providers refuse a
        past ``at`` rather than return today's chain under yesterday's time."""
        raise NotImplementedError

    def option_bars_1m(self, symbols: list[str], start: datetime, end: datetime) -> pa.Table:
        """Minute bars (``BARS_1M``) of option contracts given by OCC symbol."""
        raise NotImplementedError
