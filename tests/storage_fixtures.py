"""Warehouse fixtures: one chDB engine directory per test process (chDB allows one engine per
process), a fresh database per test, and the same tests over the HTTP endpoint of the services."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from quant_resources.warehouse import WarehouseResource


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("chdb"))


def _http_url(database: str) -> str:
    url = os.environ.get("CLICKHOUSE_URL", "")
    if not os.environ.get("QUANT_TEST_SERVICES") or not url.startswith("http"):
        pytest.fail("the ClickHouse endpoint is not running: run the suite with `make test`")
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@pytest.fixture(params=["chdb", "http"])
def warehouse(request, chdb_dir):
    database = f"t_{uuid.uuid4().hex[:12]}"
    if request.param == "chdb":
        url = f"chdb://{chdb_dir}?database={database}"
    else:
        url = _http_url(database)
    resource = WarehouseResource(url=url)
    yield resource
    resource.command(f"DROP DATABASE IF EXISTS {database}")
