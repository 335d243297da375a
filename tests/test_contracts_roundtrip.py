"""validate -> serialise -> validate is the identity for every contract, and the JSON matches
the committed JSON Schema."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quant_core.contracts import MODELS
from tests.strategies import STRATEGIES

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas" / "v1"


def test_every_model_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(MODELS)


def _validator(model) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{model.__name__}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(model, data) -> None:
    original = data.draw(STRATEGIES[model])
    text = original.model_dump_json()
    again = model.model_validate_json(text)
    assert again == original
    assert again.model_dump_json() == text
    # Python-mode dump (Decimals, datetimes) must validate back to the same object too.
    assert model.model_validate(original.model_dump()) == original
    _validator(model).validate(json.loads(text))
    for name, value in original:
        if hasattr(value, "tzinfo") and value.tzinfo is not None:
            assert value.tzinfo is UTC, f"{name} was not normalised to UTC"
