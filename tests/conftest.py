"""Shared fixtures. Service fixtures read what ``scripts/test-services`` exports.

A test that asks for a service fixture fails (never skips) when the services are not running:
a silently skipped storage test would hide exactly the failures it exists to catch. Tests that
ask for none of them run anywhere.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from quant_dev.processes import Child, free_port
from quant_resources.warehouse import WarehouseResource

# Makes `--dist loadgroup` honour xdist_group again and hands out the longest work first.
pytest_plugins = ("tests.xdist_scheduling",)

_HOW = "run the suite with `make test`, or wrap pytest in `scripts/test-services run -- ...`"


# Commands run in-process (typer's CliRunner) set these for the libraries they call (the
# backfill CLI points DAGSTER_HOME at its instance); left behind, they would change what every
# later test of the same worker does (a `quant live` child would become a Dagster run).
PROCESS_WIDE = ("DAGSTER_HOME",)


@pytest.fixture(autouse=True)
def _restore_process_wide_environment() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in PROCESS_WIDE}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _require(*names: str) -> dict[str, str]:
    if os.environ.get("QUANT_TEST_SERVICES") != "1":
        pytest.fail(f"this test needs the test services (QUANT_TEST_SERVICES is not set): {_HOW}")
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"the test services did not export {', '.join(missing)}: {_HOW} "
            "(is that service listed in QUANT_TEST_SERVICES_SKIP?)"
        )
    return {name: os.environ[name] for name in names}


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _require("POSTGRES_URL")["POSTGRES_URL"]


@pytest.fixture(scope="session")
def dagster_pg_env() -> dict[str, str]:
    return _require(
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_USER",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_DB",
    )


@pytest.fixture(scope="session")
def s3_env() -> dict[str, str]:
    """AWS_* variables of the S3 server plus ``QUANT_TEST_S3_BUCKET`` (an existing bucket)."""
    return _require(
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "QUANT_TEST_S3_BUCKET",
    )


@pytest.fixture(scope="session")
def clickhouse_url() -> str:
    return _require("CLICKHOUSE_URL")["CLICKHOUSE_URL"]


@pytest.fixture
def nats_url(tmp_path) -> Iterator[str]:
    """A nats-server of this test's own (loopback, password required): tests that count what
    was published must not hear the demo's or another test's live sessions, which publish on
    the same subjects when they run at the same time."""
    binary = shutil.which("nats-server")
    if binary is None:
        pytest.fail("nats-server is not installed: scripts/test-services installs it")
    port, password = free_port(), secrets.token_hex(12)

    def accepts() -> bool:
        with socket.create_connection(("127.0.0.1", port), 1):
            return True

    server = Child(
        "nats-server",
        [binary, "-a", "127.0.0.1", "-p", str(port), "--user", "quant", "--pass", password],
        accepts,
        log=tmp_path / "nats-server.log",
        start_timeout=30,
    )
    try:
        yield f"nats://quant:{password}@127.0.0.1:{port}"
    finally:
        server.stop(10)


@pytest.fixture
def quant_home(tmp_path, monkeypatch) -> Path:
    """A private QUANT_HOME, so no test reads or writes the developer's `.quant/`."""
    home = tmp_path / "quant_home"
    home.mkdir()
    monkeypatch.setenv("QUANT_HOME", str(home))
    return home


# chDB hosts one engine per process: every in-process chDB user in a test process shares this
# directory, each test in a database of its own.
@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("chdb"))


def _http_url(database: str) -> str:
    url = _require("CLICKHOUSE_URL")["CLICKHOUSE_URL"]
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
