"""Dagster wiring: assets, asset checks and jobs (``quant_definitions`` is the code location).

The backfill policies of the partitioned assets are a Dagster beta feature this project chose
knowingly; its warning, printed once per asset at every import (UI, daemon, CLI, runs), says
nothing a user can act on, so it is silenced here, before any asset is defined. The same
holds for partitioned asset checks (a preview feature), which name the partition of every
check result.
"""

import warnings

from dagster import BetaWarning, PreviewWarning

warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")
warnings.filterwarnings(
    "ignore", category=PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*"
)
