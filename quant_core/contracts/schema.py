"""JSON Schema of the v1 contracts: one document per model plus a bundle.

The schema describes the JSON the platform emits (pydantic's serialisation mode: Decimals as
strings, timestamps as ISO-8601 UTC). ``schemas/v1/`` holds the committed copy; a test compares
it with :func:`schema_files` so that a model change without a re-export fails the suite.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from quant_core.contracts.market import (
    Bar,
    BookSnapshot,
    BookTicker,
    L2Update,
    OptionsQuote,
    Trade,
)
from quant_core.contracts.signals import Action, AlphaSignal, Features, RiskVerdict
from quant_core.contracts.trading import Order, Position
from quant_core.contracts.types import SCHEMA_VERSION

MODELS: tuple[type[BaseModel], ...] = (
    Bar,
    Trade,
    BookTicker,
    L2Update,
    BookSnapshot,
    OptionsQuote,
    Order,
    Position,
    Features,
    AlphaSignal,
    Action,
    RiskVerdict,
)
BUNDLE_NAME = f"quant.{SCHEMA_VERSION}.schema.json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="serialization")
    return {
        "$schema": _DIALECT,
        "$id": f"urn:quant:{SCHEMA_VERSION}:{model.__name__}",
        **schema,
    }


def bundle_schema() -> dict[str, Any]:
    """All models in one document: each under ``$defs`` and listed in ``anyOf``."""
    defs: dict[str, Any] = {}
    for model in MODELS:
        schema = model.model_json_schema(mode="serialization", ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[model.__name__] = schema
    return {
        "$schema": _DIALECT,
        "$id": f"urn:quant:{SCHEMA_VERSION}",
        "title": f"quant contracts {SCHEMA_VERSION}",
        "anyOf": [{"$ref": f"#/$defs/{model.__name__}"} for model in MODELS],
        "$defs": dict(sorted(defs.items())),
    }


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def schema_files() -> dict[str, str]:
    """File name -> exact text of every schema file, as ``quant schemas export`` writes them."""
    files = {f"{model.__name__}.schema.json": _dumps(model_schema(model)) for model in MODELS}
    files[BUNDLE_NAME] = _dumps(bundle_schema())
    return files
