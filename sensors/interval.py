"""How often the sensors look: their own interval, or ``QUANT_SENSOR_INTERVAL_S`` when set.

The shortest wait between a sensor's evaluations is what a test of a running ``dagster dev``
spends waiting for the next tick (the supervisor's 30 s, the session-log sensor's 60 s), so the
tests set a few seconds; a deployment keeps the defaults."""

from __future__ import annotations

from quant_resources.settings import setting

VARIABLE = "QUANT_SENSOR_INTERVAL_S"


def sensor_interval(default: int) -> int:
    """``default`` seconds, or the variable's whole number of seconds (at least 1)."""
    value = setting(VARIABLE)
    if value is None:
        return default
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(f"{VARIABLE}={value!r}: expected whole seconds, e.g. 5") from None
    if seconds < 1:
        raise ValueError(f"{VARIABLE}={value!r}: expected at least 1 second")
    return seconds
