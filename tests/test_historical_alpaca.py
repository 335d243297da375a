"""The historical assets against the local Alpaca server (``quant sim alpaca``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from quant_assets.historical import option_chain_snapshots, stock_bars_1m
from quant_assets.schema import clickhouse_schema
from quant_dev.alpaca_sim import process
from quant_resources.alpaca import AlpacaResource
from quant_resources.lake import LakeResource
from quant_resources.migrations import load
from quant_resources.store import HistoricalStore
from tests.dagster_helpers import failure_text

pytestmark = pytest.mark.xdist_group("alpaca_sim")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SYMBOLS = "SPY,QQQ,AAPL,MSFT,NVDA"
KEYS = {"ALPACA_API_KEY": "test", "ALPACA_SECRET_KEY": "test"}


def alpaca(url: str) -> AlpacaResource:
    return AlpacaResource(
        api_key="test",
        secret_key="test",
        data_url=url,
        max_retries=2,
        backoff_factor_seconds=0.01,
        backoff_max_seconds=0.05,
        timeout_seconds=10,
    )


def fingerprint(warehouse, lake) -> tuple:
    rows = warehouse.query_rows(
        "SELECT count(), sum(cityHash64(symbol, ts, toString(close), toString(volume))) "
        "FROM bars_1m FINAL WHERE source = 'alpaca'"
    )[0]
    physical = warehouse.scalar("SELECT count() FROM bars_1m WHERE source = 'alpaca'")
    files = {k: lake.read_parquet(k).num_rows for k in lake.list("bars_1m/source=alpaca/")}
    return rows, physical, files


@pytest.fixture
def schema_ready(warehouse, tmp_path):
    lake = LakeResource(url=f"file://{tmp_path / 'lake'}")
    dg.materialize(
        [clickhouse_schema],
        partition_key=load("clickhouse")[-1].key,
        resources={"warehouse": warehouse},
    )
    return warehouse, lake


def stored(warehouse, lake) -> dict:
    return {
        "warehouse": warehouse,
        "lake": lake,
        "store": HistoricalStore(warehouse=warehouse, lake=lake),
    }


def test_missing_keys_fail_naming_the_variables(schema_ready, monkeypatch) -> None:
    warehouse, lake = schema_ready
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QUANT_EQUITY_SYMBOLS", "SPY")
    result = dg.materialize(
        [stock_bars_1m],
        partition_key="2024-07-01",
        raise_on_error=False,
        resources={**stored(warehouse, lake), "market_data": AlpacaResource()},
    )
    assert not result.success
    message = failure_text(result)
    assert "ALPACA_API_KEY" in message and "ALPACA_SECRET_KEY" in message


def test_server_killed_mid_pagination_keeps_the_previous_partition(schema_ready, monkeypatch):
    warehouse, lake = schema_ready
    monkeypatch.setenv("QUANT_EQUITY_SYMBOLS", SYMBOLS)
    resources = stored(warehouse, lake)
    with process.running("--page-limit", "500") as sim:
        ok = dg.materialize(
            [stock_bars_1m],
            partition_key="2024-07-01",
            resources={**resources, "market_data": alpaca(sim.url)},
        )
    assert ok.success
    before = fingerprint(warehouse, lake)
    assert before[0][0] > 2000
    with process.running("--page-limit", "500", "--faults", "die_after_pages:3") as sim:
        result = dg.materialize(
            [stock_bars_1m],
            partition_key="2024-07-01",
            raise_on_error=False,
            resources={**resources, "market_data": alpaca(sim.url)},
        )
        assert sim.process.wait(timeout=30) != 0  # the server really died mid-pagination
    assert not result.success
    assert fingerprint(warehouse, lake) == before


def test_past_option_snapshots_are_refused_not_fabricated(schema_ready, monkeypatch) -> None:
    warehouse, lake = schema_ready
    monkeypatch.setenv("QUANT_OPTION_UNDERLYINGS", "SPY")
    with process.running() as sim:
        result = dg.materialize(
            [option_chain_snapshots],
            partition_key="2024-07-01",
            raise_on_error=False,
            resources={**stored(warehouse, lake), "market_data": alpaca(sim.url)},
        )
    assert not result.success
    message = failure_text(result)
    assert "Alpaca serves no historical option quotes" in message
    assert warehouse.scalar("SELECT count() FROM options_quotes") == 0


@pytest.mark.parametrize("warehouse", ["http"], indirect=True)
def test_cli_backfill_of_a_month_is_repeatable(schema_ready, tmp_path) -> None:
    """`quant backfill` of July 2024 for 5 symbols, twice: identical rows, checksums, files."""
    warehouse, lake = schema_ready
    with process.running("--page-limit", "10000") as sim:
        env = {
            **os.environ,
            **KEYS,
            "QUANT_EQUITY_SOURCE": "alpaca",
            "ALPACA_DATA_URL": sim.url,
            "QUANT_EQUITY_SYMBOLS": SYMBOLS,
            "QUANT_HOME": str(tmp_path / "home"),
            "DAGSTER_HOME": str(tmp_path / "dagster"),
            "CLICKHOUSE_URL": warehouse.url,
            "LAKE_URL": lake.url,
        }
        (tmp_path / "dagster").mkdir()
        command = [str(BIN / "quant"), "backfill", "--from", "2024-07-01", "--to", "2024-07-31"]
        prints = []
        for _ in range(2):
            done = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, done.stderr[-3000:]
            prints.append(fingerprint(warehouse, lake))
    assert "22 partitions in 1 runs; failed: 0" in done.stdout
    (rows, physical, files), again = prints
    assert again == prints[0]
    assert rows[0] == physical  # the re-run replaced the slice: no second copy remains
    assert len(files) == 22  # one file per (source, session), every symbol in it
    assert sum(files.values()) == rows[0]
    assert (
        warehouse.scalar("SELECT uniqExact(session_date) FROM bars_1d WHERE source = 'alpaca'")
        == 22
    )
