"""QUANT_SENSOR_INTERVAL_S shortens the sensors' interval (the browser tests); a bad value is
an error naming the variable and the value."""

from __future__ import annotations

import pytest

from sensors.interval import sensor_interval


def test_default_unless_the_variable_is_set(monkeypatch) -> None:
    monkeypatch.delenv("QUANT_SENSOR_INTERVAL_S", raising=False)
    assert sensor_interval(30) == 30
    monkeypatch.setenv("QUANT_SENSOR_INTERVAL_S", "5")
    assert sensor_interval(30) == 5


@pytest.mark.parametrize("value", ["soon", "0", "-3", "2.5"])
def test_a_bad_value_names_the_variable_and_the_value(monkeypatch, value: str) -> None:
    monkeypatch.setenv("QUANT_SENSOR_INTERVAL_S", value)
    with pytest.raises(ValueError, match=f"QUANT_SENSOR_INTERVAL_S='{value}'"):
        sensor_interval(30)
