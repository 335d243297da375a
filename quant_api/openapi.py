"""The OpenAPI document of the data service, as locked in schemas/openapi/."""

from __future__ import annotations

import json
from pathlib import Path

LOCKED = Path("schemas/openapi/quant-api.v1.json")


def openapi_text() -> str:
    """The document the current code serves, in its committed form (stable key order)."""
    from quant_api.app import create_app
    from quant_resources.lake import LakeResource
    from quant_resources.warehouse import WarehouseResource

    # Placeholders: building the document opens no connection.
    app = create_app(
        warehouse=WarehouseResource(url="chdb:///nonexistent"),
        lake=LakeResource(url="file:///nonexistent"),
        tokens=[],
        cors_origins=[],
    )
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
