"""Dagster wiring: assets, asset checks and jobs. ``definitions.py`` is the code location."""
