"""A failing backend (warehouse, Redis, lake) is a 503 naming it, never a bare 500."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from clickhouse_connect.driver.exceptions import Error as ClickHouseClientError

from quant_api.errors import BackendUnavailable
from quant_resources.lake import LakeError
from quant_resources.latest_store import LatestStoreError
from quant_resources.warehouse import WarehouseError

_log = logging.getLogger(__name__)


@contextlib.contextmanager
def backend(name: str, where: str) -> Iterator[None]:
    """A failing backend is a 503 naming it; its own message goes to the log only."""
    try:
        yield
    except (WarehouseError, ClickHouseClientError, LakeError, LatestStoreError, OSError) as exc:
        _log.error("%s at %s failed: %s", name, where, exc)
        raise BackendUnavailable(f"{name} at {where} failed ({type(exc).__name__})") from None
