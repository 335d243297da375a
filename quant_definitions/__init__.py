"""The ``quant`` code location loaded by workspace.yaml, ``dagster dev`` and the daemon."""

import dagster as dg

from quant_assets.books import book_checks, live_book_snapshots
from quant_assets.crypto_history import crypto_history_assets, crypto_history_job
from quant_assets.historical import historical_assets
from quant_assets.jobs import jobs
from quant_assets.live import live_checks, live_ingest, live_ingest_job
from quant_assets.replay import replay_verification
from quant_assets.resources import build_resources
from quant_assets.schema import schema_assets, schema_checks
from sensors.live import live_ingest_supervisor
from sensors.replay import new_session_logs
from sensors.schedules import schedules

defs = dg.Definitions(
    assets=[
        *schema_assets,
        *historical_assets,
        *crypto_history_assets,
        live_ingest,
        live_book_snapshots,
        replay_verification,
    ],
    asset_checks=[*schema_checks, *live_checks, *book_checks],
    jobs=[*jobs, live_ingest_job, crypto_history_job],
    schedules=schedules,
    sensors=[live_ingest_supervisor, new_session_logs],
    resources=build_resources(),
    # tdag: a run's steps execute in the run's own process. Each asset job's run is one step
    # or a short chain (a backfill chunk is one step over up to 25 sessions: parallelism
    # comes from runs), and a step subprocess costs a fresh Python with Dagster's imports.
    executor=dg.in_process_executor,
)
