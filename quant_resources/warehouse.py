"""``WarehouseResource``: the warehouse (``quant_resources.warehouse_client``) as a Dagster
resource.

Everything the warehouse does is in ``warehouse_client``, which does not import Dagster, so
``quant live --no-dagster`` starts without it (its ``Warehouse`` is the same operations with a
plain constructor). This module adds the Dagster configuration and re-exports the client's
names, so Dagster code keeps importing them from here.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from quant_resources.settings import masked_repr_args
from quant_resources.warehouse_client import (
    STAGE_PREFIX,
    STALE_STAGE_NS,
    StagedSlice,
    Warehouse,
    WarehouseError,
    WarehouseOperations,
    WarehouseValidationError,
    close_all_clients,
    identifier,
)

__all__ = [
    "STAGE_PREFIX",
    "STALE_STAGE_NS",
    "StagedSlice",
    "Warehouse",
    "WarehouseError",
    "WarehouseResource",
    "WarehouseValidationError",
    "close_all_clients",
    "identifier",
]


class WarehouseResource(WarehouseOperations, dg.ConfigurableResource):
    """The ClickHouse warehouse. ``url`` defaults to ``CLICKHOUSE_URL``, else chDB in QUANT_HOME."""

    url: str | None = Field(
        default=None,
        description="http(s)://user:password@host:port/db or chdb:///dir?database=db",
    )
    _columns: dict[str, dict[str, str]] = PrivateAttr(default_factory=dict)
    _resolved: str | None = PrivateAttr(default=None)

    def __repr_args__(self):
        return masked_repr_args(super().__repr_args__(), urls=("url",))
