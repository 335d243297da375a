"""Resources of the code location, configured from the environment.

A variable that is set becomes an ``EnvVar`` (Dagster shows its name, never its value); an unset
one leaves the resource on its embedded default (chDB / a Parquet folder under QUANT_HOME), or,
for services with no embedded form (PostgreSQL, Alpaca), to a clear error when first used.
"""

from __future__ import annotations

from quant_assets.config import equity_source
from quant_resources.binance_archive import BinanceArchiveResource
from quant_resources.lake import LakeResource
from quant_resources.market import MarketDataResource
from quant_resources.postgres import PostgresResource
from quant_resources.settings import env_or
from quant_resources.store import HistoricalStore
from quant_resources.synthetic import SyntheticMarketResource
from quant_resources.warehouse import WarehouseResource


def market_data_resource() -> MarketDataResource:
    provider, _ = equity_source()
    if provider == "synthetic":
        return SyntheticMarketResource()
    from quant_resources.alpaca import AlpacaResource

    return AlpacaResource(
        api_key=env_or("ALPACA_API_KEY", None),
        secret_key=env_or("ALPACA_SECRET_KEY", None),
        data_url=env_or("ALPACA_DATA_URL", None),
        feed=env_or("ALPACA_FEED", "iex"),
    )


def build_resources() -> dict[str, object]:
    warehouse = WarehouseResource(url=env_or("CLICKHOUSE_URL", None))
    lake = LakeResource(url=env_or("LAKE_URL", None))
    return {
        "warehouse": warehouse,
        "postgres": PostgresResource(url=env_or("POSTGRES_URL", None)),
        "lake": lake,
        "store": HistoricalStore(warehouse=warehouse, lake=lake),
        "market_data": market_data_resource(),
        # The base URL comes from BINANCE_ARCHIVE_URL (settings) when the client is built.
        "binance_archive": BinanceArchiveResource(),
    }
