"""No secret given to the platform appears in reprs, logs, Dagster's event storage, run
config, metadata or error messages: a real run of the historical assets and the schema
assets, configured from the environment as the code location is, scanned for each secret."""

from __future__ import annotations

import logging
import secrets
import uuid
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import pytest

from quant_assets.historical import stock_bars_1d, stock_bars_1m
from quant_assets.resources import build_resources
from quant_assets.schema import clickhouse_schema, postgres_schema
from quant_dev.alpaca_sim import process
from quant_resources.alpaca import AlpacaResource
from quant_resources.lake import LakeResource
from quant_resources.migrations import load
from quant_resources.settings import redact_url
from quant_resources.store import HistoricalStore
from quant_resources.warehouse import WarehouseResource, close_all_clients

pytestmark = pytest.mark.xdist_group("alpaca_sim")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:s3cr3t@h:8123/db", "http://u:***@h:8123/db"),
        ("http://h/db?password=s3cr3t&x=1", "http://h/db?password=***&x=1"),
        ("https://h/p?PWD=s3cr3t&Passwd=s3cr3t", "https://h/p?PWD=***&Passwd=***"),
        ("s3://b/p?X-Amz-Signature=s3cr3t&X-Amz-Credential=s3cr3t", None),
        ("https://h/p?access_key=s3cr3t&secret_key=s3cr3t&token=s3cr3t&sig=s3cr3t", None),
        ("postgresql://u@h/db?sslpassword=s3cr3t&application_name=q", None),
        ("chdb:///tmp/x?database=quant", "chdb:///tmp/x?database=quant"),
    ],
)
def test_redact_url_masks_passwords_and_credential_parameters(url, shown) -> None:
    redacted = redact_url(url)
    assert "s3cr3t" not in redacted
    if shown is not None:
        assert redacted == shown


@pytest.fixture
def secret_env(monkeypatch, clickhouse_url, postgres_url, s3_env, quant_home) -> dict[str, str]:
    """The code location's environment with a secret in every credential; returns them."""
    given = {
        "alpaca key": f"AKFAKE{secrets.token_hex(8).upper()}",
        "alpaca secret": f"fake-secret-{secrets.token_hex(12)}",
        "aws key id": f"AKIAFAKE{secrets.token_hex(6).upper()}",
        "aws secret": f"aws-secret-{secrets.token_hex(12)}",  # moto accepts any key pair
        "clickhouse password": urlsplit(clickhouse_url).password,
        "postgres password": urlsplit(postgres_url).password,
    }
    assert all(given.values()), given
    database = f"s_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(
        "CLICKHOUSE_URL", urlunsplit(urlsplit(clickhouse_url)._replace(path=f"/{database}"))
    )
    monkeypatch.setenv("POSTGRES_URL", postgres_url)
    monkeypatch.setenv("LAKE_URL", f"s3://{s3_env['QUANT_TEST_S3_BUCKET']}/secrets-{database}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", given["aws key id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", given["aws secret"])
    monkeypatch.setenv("ALPACA_API_KEY", given["alpaca key"])
    monkeypatch.setenv("ALPACA_SECRET_KEY", given["alpaca secret"])
    monkeypatch.setenv("QUANT_EQUITY_SOURCE", "alpaca")
    monkeypatch.setenv("QUANT_EQUITY_SYMBOLS", "SPY,AAPL")
    monkeypatch.setenv("QUANT_SIM_ALPACA_KEY", given["alpaca key"])
    monkeypatch.setenv("QUANT_SIM_ALPACA_SECRET", given["alpaca secret"])
    yield given
    WarehouseResource(url=None).command(f"DROP DATABASE IF EXISTS {database}")
    close_all_clients()


def _scan(text: str, given: dict[str, str], where: str) -> None:
    for name, value in given.items():
        assert value not in text, f"the {name} appears in {where}"


def test_a_real_run_leaks_no_secret(secret_env, monkeypatch, capfd, caplog) -> None:
    # Our code and Dagster at DEBUG, client libraries at INFO: botocore's own DEBUG output
    # prints request headers (the key id in the signature), which is no log we ship.
    caplog.set_level(logging.INFO)
    for ours in ("quant_resources", "quant_assets", "quant_core", "dagster"):
        caplog.set_level(logging.DEBUG, logger=ours)
    instance = dg.DagsterInstance.ephemeral()
    results = []
    with process.running() as sim:
        monkeypatch.setenv("ALPACA_DATA_URL", sim.url)
        resources = build_resources()
        for resource in resources.values():
            _scan(repr(resource) + str(resource), secret_env, f"repr of {resource!r}")
        runs = [
            ([clickhouse_schema], load("clickhouse")[-1].key),
            ([postgres_schema], load("postgres")[-1].key),
            ([stock_bars_1m, stock_bars_1d], "2024-07-01"),
            ([stock_bars_1m, stock_bars_1d], "2024-07-01"),  # a replacement, not a first write
        ]
        for assets, key in runs:
            result = dg.materialize(
                assets, partition_key=key, resources=resources, instance=instance
            )
            assert result.success
            results.append(result)
        # A failure's message and cause are stored too: a warehouse that refuses the
        # password, and a provider that refuses the keys.
        wrong = WarehouseResource(
            url=WarehouseResource(url=None).resolved_url.replace("@", "x@", 1)
        )
        results.append(
            dg.materialize(
                [clickhouse_schema],
                partition_key=load("clickhouse")[-1].key,
                resources={**resources, "warehouse": wrong},
                instance=instance,
                raise_on_error=False,
            )
        )
        assert not results[-1].success
        refused = AlpacaResource(
            api_key=secret_env["alpaca key"],
            secret_key=secret_env["alpaca secret"] + "x",
            data_url=sim.url,
            max_retries=0,
        )
        results.append(
            dg.materialize(
                [stock_bars_1m],
                partition_key="2024-07-02",
                resources={**resources, "market_data": refused},
                instance=instance,
                raise_on_error=False,
            )
        )
        assert not results[-1].success
        plain = HistoricalStore(warehouse=wrong, lake=LakeResource(url=resources["lake"].url))
        for resource in (wrong, refused, plain):  # configured with values, not EnvVars
            _scan(repr(resource) + str(resource), secret_env, f"repr of {type(resource)}")
    metadata = []
    for result in results:
        for event in result.all_events:
            if event.event_type_value == "ASSET_MATERIALIZATION":
                metadata.append(event.event_specific_data.materialization.metadata)
    assert any("version" in m for m in metadata)  # the store's metadata was produced
    for result in results:
        run = instance.get_run_by_id(result.run_id)
        _scan(dg.serialize_value(run), secret_env, f"run {result.run_id} (run config, tags)")
        for entry in instance.all_logs(result.run_id):
            _scan(dg.serialize_value(entry), secret_env, f"event log of run {result.run_id}")
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    )
    assert records
    for record in records:
        _scan(dg.serialize_value(record), secret_env, "materialisation records")
    _scan(dg.serialize_value(metadata), secret_env, "materialisation metadata")
    out, err = capfd.readouterr()
    _scan(out + err, secret_env, "captured stdout/stderr")
    _scan(caplog.text, secret_env, "captured log records")
