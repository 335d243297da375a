"""Jobs over the historical assets (targets of the schedules and of `quant backfill`)."""

import dagster as dg

from quant_assets.historical import (
    option_bars_1m,
    option_chain_snapshots,
    stock_bars_1d,
    stock_bars_1m,
)
from quant_assets.replay import replay_sessions, replay_verification

historical_daily_job = dg.define_asset_job(
    "historical_daily_job",
    selection=[stock_bars_1m, stock_bars_1d],
    description="1-minute and daily equity bars of NYSE sessions.",
)
option_snapshot_job = dg.define_asset_job(
    "option_snapshot_job",
    selection=[option_chain_snapshots],
    description="One snapshot of the option chains of the configured underlyings.",
)
option_bars_job = dg.define_asset_job(
    "option_bars_job",
    selection=[option_bars_1m],
    description="Minute bars of the option contracts seen in the day's chain snapshots.",
)
jobs = [historical_daily_job, option_snapshot_job, option_bars_job]

clickhouse_schema_job = dg.define_asset_job(
    "clickhouse_schema_job",
    selection=["clickhouse_schema"],
    description="Apply the ClickHouse migrations up to the chosen partition.",
)
jobs.append(clickhouse_schema_job)

# Named, so the sensor's and the demo's verification runs say what they are in the UI.
replay_verification_job = dg.define_asset_job(
    "replay_verification_job",
    selection=[replay_verification],
    partitions_def=replay_sessions,
    description="Replay one recorded live session and compare it with ClickHouse.",
)
jobs.append(replay_verification_job)
