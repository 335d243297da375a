"""``LakeResource``: the lake (``quant_resources.lake_client``) as a Dagster resource.

Everything the lake does is in ``lake_client``, which does not import Dagster, so
``quant live --no-dagster`` starts without it (its ``Lake`` is the same operations with a
plain constructor). This module adds the Dagster configuration and re-exports the client's
names, so Dagster code keeps importing them from here.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from quant_resources.lake_client import (
    TEMP_PREFIX,
    Lake,
    LakeError,
    LakeOperations,
    PreparedObject,
    encode_parquet,
)
from quant_resources.settings import masked_repr_args

__all__ = ["TEMP_PREFIX", "Lake", "LakeError", "LakeResource", "PreparedObject", "encode_parquet"]


class LakeResource(LakeOperations, dg.ConfigurableResource):
    """The Parquet lake. ``url`` defaults to ``LAKE_URL``, else ``file://$QUANT_HOME/lake``."""

    url: str | None = Field(default=None, description="file://DIR or s3://bucket/prefix")
    # The store the URL names (quant_resources.lake_client), made on first use.
    _backend: object | None = PrivateAttr(default=None)

    def __repr_args__(self):
        return masked_repr_args(super().__repr_args__(), urls=("url",))
