"""The ``quant`` code location loaded by workspace.yaml, ``dagster dev`` and the daemon."""

import dagster as dg

from quant_assets.historical import historical_assets
from quant_assets.jobs import jobs
from quant_assets.resources import build_resources
from quant_assets.schema import schema_assets, schema_checks
from sensors.schedules import schedules

defs = dg.Definitions(
    assets=[*schema_assets, *historical_assets],
    asset_checks=[*schema_checks],
    jobs=jobs,
    schedules=schedules,
    resources=build_resources(),
)
