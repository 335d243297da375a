"""Dagster sensors and schedules of the quant code location."""
