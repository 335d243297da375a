"""The ``quant`` code location loaded by workspace.yaml, ``dagster dev`` and the daemon."""

from __future__ import annotations

import dagster as dg

defs = dg.Definitions(assets=[], asset_checks=[], jobs=[], schedules=[], sensors=[], resources={})
