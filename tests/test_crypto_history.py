"""crypto_history end to end through ``dagster.materialize``: the real ``quant sim
binance-archive`` over HTTP, the real warehouse endpoint (scripts/test-services), a file lake.

Backfills twice (identical content), every archive fault, our bars against the served klines,
and live trades (written as the live sink writes them) reconciled with the archive's.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, timedelta
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quant_assets.crypto_history import (
    binance_klines_1m,
    coverage_summary,
    crypto_archive_trades,
    crypto_coverage_1m,
)
from quant_assets.schema import clickhouse_schema
from quant_core.crypto_reconcile import archive_trade_rows
from quant_dev.processes import archive_simulator
from quant_resources.binance_archive import ArchiveClient, BinanceArchiveResource
from quant_resources.crypto_warehouse import coverage_rows
from quant_resources.lake import LakeResource
from quant_resources.live.sinks import trade_columns_table
from quant_resources.migrations import load
from quant_resources.store import HistoricalStore
from quant_resources.warehouse import WarehouseResource
from tests.dagster_helpers import failure_text

AGGS = 1500  # aggregate trades per symbol and day
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
GOOD = ["2024-12-30", "2024-12-31", "2025-01-01", "2025-01-02"]  # ms, then µs files
FAULTS = {
    "missing": "BTCUSDT-aggTrades-2024-12-10",
    "corrupt": "BTCUSDT-aggTrades-2024-12-12",
    "checksum": "ETHUSDT-aggTrades-2024-12-14",
    "truncate": "BTCUSDT-aggTrades-2024-12-16",
    "badrow": "ETHUSDT-aggTrades-2024-12-18",
    "columns": "BTCUSDT-aggTrades-2024-12-20",
    "outside": "ETHUSDT-aggTrades-2024-12-22",
    "zeroprice": "BTCUSDT-aggTrades-2024-12-24",
}
RETRIED = "BTCUSDT-aggTrades-2024-12-31"  # two 503s, then served
SLOW = "ETHUSDT-klines-1m-2024-12-30"  # answers after 0.3 s
# December's month files are "not published yet", so its days come from the day files above
# (with their faults); November's month file is served, October's is corrupt.
MONTH_FAULTS = ["missing:*-2024-12", "corrupt:BTCUSDT-aggTrades-2024-10"]


@pytest.fixture(scope="module")
def sim_url():
    faults = [f"{kind}:{stem}" for kind, stem in FAULTS.items()]
    faults += [f"5xx:{RETRIED}:2", f"slow:{SLOW}:0.3", *MONTH_FAULTS]
    args = ["--symbols", ",".join(SYMBOLS).lower(), "--first", "2024-10-01"]
    args += ["--last", "2025-01-05", "--aggs-per-day", str(AGGS), "--header-from", "2025-01-02"]
    with archive_simulator(*args, "--faults", ",".join(faults)) as (_, url):
        yield url


@pytest.fixture
def env(clickhouse_url, sim_url, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANT_CRYPTO_SYMBOLS", ",".join(SYMBOLS))
    database = f"t_{uuid.uuid4().hex[:12]}"
    url = urlunsplit(urlsplit(clickhouse_url)._replace(path=f"/{database}"))
    warehouse = WarehouseResource(url=url)
    lake = LakeResource(url=f"file://{tmp_path / 'lake'}")
    resources = {
        "warehouse": warehouse,
        "lake": lake,
        "store": HistoricalStore(warehouse=warehouse, lake=lake),
        "binance_archive": BinanceArchiveResource(
            base_url=sim_url, attempts=3, cache_dir=str(tmp_path / "cache")
        ),
    }
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(
        [clickhouse_schema],
        partition_key=load("clickhouse")[-1].key,
        resources=resources,
        instance=instance,
    )
    yield resources, instance
    warehouse.command(f"DROP DATABASE IF EXISTS {database}")


def run(env, assets, first: str, last: str | None = None, **kwargs):
    resources, instance = env
    return dg.materialize(
        assets,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last or first,
        },
        resources=resources,
        instance=instance,
        raise_on_error=False,
        **kwargs,
    )


ALL = [binance_klines_1m, crypto_archive_trades]


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            found[data.asset_check_key.name] = data
    return found


def meta(evaluation, key: str):
    return evaluation.metadata[key].value


def rows_of(evaluation, key: str) -> list[dict]:
    """A check's differences table (drawn in place in the UI) as rows of text."""
    return [record.data for record in evaluation.metadata[key].records]


def content(env) -> dict[str, str]:
    """Hash of every table's archive rows (without version and insert time) and every lake
    file, so two runs can be compared."""
    resources, _ = env
    wh, lake = resources["warehouse"], resources["lake"]
    out = {}
    for table, order in (
        ("trades", "symbol, trade_id"),
        ("bars_1m", "symbol, ts"),
        ("binance_klines_1m", "symbol, ts"),
    ):
        rows = wh.query_arrow(
            f"SELECT * EXCEPT (version{', ingested_at' if table == 'bars_1m' else ''}) "
            f"FROM {table} FINAL WHERE source = 'binance_archive' ORDER BY {order}"
        )
        out[table] = (
            f"{rows.num_rows}:" + hashlib.sha256(rows.to_pandas().to_csv().encode()).hexdigest()
        )
    for dataset in ("trades", "bars_1m", "binance_klines_1m"):
        for key in sorted(lake.list(f"{dataset}/source=binance_archive/")):
            out[key] = hashlib.sha256(lake.read_bytes(key)).hexdigest()
    return out


def test_backfill_twice_gives_identical_content_and_bars_equal_klines(env) -> None:
    first = run(env, ALL, GOOD[0], GOOD[-1])
    assert first.success, failure_text(first)
    once = content(env)
    assert once["trades"].startswith(f"{AGGS * len(GOOD) * len(SYMBOLS)}:")
    assert len([k for k in once if k.startswith("trades/")]) == len(GOOD)
    found = checks(first)
    assert found["matches_binance_klines"].passed
    # ui2: one evaluation per day; together they compare every day's minutes
    kline_days = [
        e.event_specific_data
        for e in first.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.asset_check_key.name == "matches_binance_klines"
    ]
    assert len(kline_days) == len(GOOD) and all(e.passed for e in kline_days)
    assert sum(meta(e, "minutes_compared") for e in kline_days) > len(GOOD) * 1000
    assert found["matches_live_trades"].passed  # no live session on these days
    # Microseconds of the 2025 files are kept next to the millisecond ts.
    wh = env[0]["warehouse"]
    sub = wh.scalar(
        "SELECT countIf(ts_sub_us > 0) FROM trades WHERE source = 'binance_archive' "
        "AND session_date >= '2025-01-01'"
    )
    assert sub > AGGS
    second = run(env, ALL, GOOD[0], GOOD[-1])
    assert second.success, failure_text(second)
    assert content(env) == once
    assert wh.scalar("SELECT count() FROM trades WHERE source = 'binance_archive'") == AGGS * len(
        GOOD
    ) * len(SYMBOLS)  # the first run's version is gone


def test_a_differing_kline_is_listed_with_both_rows(env) -> None:
    day = GOOD[1]
    assert run(env, [binance_klines_1m], day).success
    wh = env[0]["warehouse"]
    # The exchange says otherwise for one minute: a newer version with another close.
    wh.command(
        "INSERT INTO binance_klines_1m SELECT * REPLACE (close + 1 AS close, version + 1 AS "
        "version) FROM binance_klines_1m WHERE symbol = 'ETHUSDT' AND session_date = "
        f"'{day}' ORDER BY ts LIMIT 1 OFFSET 10"
    )
    result = run(env, [crypto_archive_trades], day)
    assert result.success, failure_text(result)
    found = checks(result)["matches_binance_klines"]
    assert not found.passed
    assert meta(found, "differing_minutes") == 1
    (row,) = rows_of(found, "differences")
    assert row["symbol"] == "ETHUSDT" and row["close_bar"] != row["close_kline"]


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_a_bad_archive_file_fails_naming_it_and_writes_nothing(env, kind: str) -> None:
    stem = FAULTS[kind]
    day = stem[-10:]
    nearby = (date.fromisoformat(day) - timedelta(days=1)).isoformat()  # a good day
    result = run(env, [crypto_archive_trades], nearby, day)
    assert not result.success
    text = failure_text(result)
    assert f"{stem}.zip" in text, text
    expected = {
        "missing": "not in the archive (HTTP 404)",
        "corrupt": "cannot be unzipped",
        "checksum": "differs from its .CHECKSUM",
        "truncate": "ended early",
        "badrow": "line 3: price='abc'",
        "columns": "line 3",
        "outside": "line 3: ts_event=",
        "zeroprice": "line 3: price='0'",
    }[kind]
    assert expected in text, text
    assert "nothing written" in text
    wh = env[0]["warehouse"]
    for table in ("trades", "bars_1m"):
        assert wh.scalar(f"SELECT count() FROM {table} WHERE source = 'binance_archive'") == 0
    assert not env[0]["lake"].list("trades/")


def test_month_files_are_used_for_a_complete_past_month(env) -> None:
    result = run(env, [crypto_archive_trades], "2024-11-01", "2024-11-30")
    assert result.success, failure_text(result)
    files = result.asset_materializations_for_node("crypto_archive_trades")[0].metadata
    assert files["files"].value == [f"{s}-aggTrades-2024-11.zip" for s in SYMBOLS]
    rows = env[0]["warehouse"].scalar("SELECT count() FROM trades WHERE source = 'binance_archive'")
    assert rows == 30 * AGGS * len(SYMBOLS)


def test_a_day_of_a_complete_month_comes_from_the_month_file_once(env) -> None:
    first = run(env, [crypto_archive_trades], "2024-11-05")
    assert first.success, failure_text(first)
    meta_first = first.asset_materializations_for_node("crypto_archive_trades")[0].metadata
    assert meta_first["files"].value == [f"{s}-aggTrades-2024-11.zip" for s in SYMBOLS]
    assert meta_first["downloaded"].value == meta_first["files"].value
    # The next day of that month: sliced from the cached month, nothing downloaded.
    second = run(env, [crypto_archive_trades], "2024-11-06")
    assert second.success, failure_text(second)
    meta_second = second.asset_materializations_for_node("crypto_archive_trades")[0].metadata
    assert meta_second["files"].value == meta_first["files"].value
    assert meta_second["downloaded"].value == []
    assert env[0]["warehouse"].query_rows(
        "SELECT session_date, count() FROM trades WHERE source = 'binance_archive' "
        "GROUP BY session_date ORDER BY session_date"
    ) == [(date(2024, 11, 5), AGGS * len(SYMBOLS)), (date(2024, 11, 6), AGGS * len(SYMBOLS))]


def test_a_bad_month_file_fails_its_day_naming_it_and_writes_nothing(env) -> None:
    result = run(env, [crypto_archive_trades], "2024-10-05")
    assert not result.success
    text = failure_text(result)
    assert "BTCUSDT-aggTrades-2024-10.zip: cannot be unzipped" in text, text
    assert "nothing written" in text
    for table in ("trades", "bars_1m"):
        assert env[0]["warehouse"].scalar(f"SELECT count() FROM {table}") == 0
    assert not env[0]["lake"].list("trades/")


def _live_session(
    env, sim_url: str, day: str, drop: slice | None = None, origins: tuple[str, ...] = ("stream",)
) -> list[int]:
    """Write live trades for the middle of ``day`` as the live sink does (source 'binance',
    ms times), once per origin (several: each trade stored that many times, in one part);
    with ``drop``, those BTCUSDT trades are lost. Returns the dropped ids."""
    wh = env[0]["warehouse"]
    dropped: list[int] = []
    tables: list[pa.Table] = []
    with ArchiveClient(sim_url) as client:
        for symbol in SYMBOLS:
            agg = client.day("aggTrades", symbol, date.fromisoformat(day))
            agg = agg.slice(AGGS // 4, AGGS // 2)  # live ran for half the day
            if drop is not None and symbol == "BTCUSDT":
                ids = pc.cast(agg["agg_trade_id"], pa.int64()).to_numpy()
                dropped = ids[drop].tolist()
                agg = agg.filter(pc.invert(pc.is_in(agg["agg_trade_id"], pa.array(dropped))))
            rows = archive_trade_rows(agg, "live")
            tables += [
                trade_columns_table(
                    rows["symbol"].to_pylist(),
                    ["aggTrade"] * rows.num_rows,
                    {
                        "trade_id": pc.cast(rows["trade_id"], pa.int64()).to_numpy(),
                        "first_trade_id": pc.cast(rows["first_trade_id"], pa.int64()).to_numpy(),
                        "last_trade_id": pc.cast(rows["last_trade_id"], pa.int64()).to_numpy(),
                        "price": pc.cast(agg["price"], pa.int64()).to_numpy(),
                        "qty": pc.cast(agg["qty"], pa.int64()).to_numpy(),
                        "ts": pc.cast(rows["ts"], pa.int64()).to_numpy(),
                        "ts_init": pc.cast(rows["ts_init"], pa.int64()).to_numpy() + 5_000_000,
                    },
                    rows["is_buyer_maker"].to_numpy(zero_copy_only=False),
                    f"live-{day}-{origin}",
                    origin,
                )
                for origin in origins
            ]
    # One part holding every copy: ClickHouse never merges a lone part by itself.
    wh.insert("trades", pa.concat_tables(tables), settings={"optimize_on_insert": 0})
    return dropped


def test_live_session_reconciles_to_zero_differences(env, sim_url) -> None:
    day = GOOD[2]
    _live_session(env, sim_url, day)
    result = run(env, [crypto_archive_trades, crypto_coverage_1m], day)
    assert result.success, failure_text(result)
    found = checks(result)["matches_live_trades"]
    assert found.passed, meta(found, "table")
    assert meta(found, "differences") == 0
    assert meta(found, "live_trades") == (AGGS // 2) * len(SYMBOLS)
    assert meta(found, "archive_trades_in_live_span") == (AGGS // 2) * len(SYMBOLS)
    coverage = result.asset_materializations_for_node("crypto_coverage_1m")[0].metadata
    assert coverage["live_missed_trades"].value == 0
    assert "data:image/png;base64," in coverage["coverage"].value


def test_live_session_with_a_loss_is_reported_with_the_missing_ids(env, sim_url) -> None:
    day = GOOD[3]
    lost = _live_session(env, sim_url, day, drop=slice(100, 104))
    assert len(lost) == 4
    result = run(env, [crypto_archive_trades, crypto_coverage_1m], day)
    assert result.success, failure_text(result)
    found = checks(result)["matches_live_trades"]
    assert not found.passed
    assert meta(found, "missing_from_live") == 4 and meta(found, "extra_in_live") == 0
    assert meta(found, "missing_ids") == f"BTCUSDT: {lost[0]}-{lost[-1]}"
    listed = {(r["symbol"], r["trade_id"]) for r in rows_of(found, "table")}
    assert listed == {("BTCUSDT", str(ident)) for ident in lost}
    coverage = result.asset_materializations_for_node("crypto_coverage_1m")[0].metadata
    assert coverage["live_missed_trades"].value == 4
    live, archive = env[0]["warehouse"].query_rows(
        "SELECT sum(live), sum(archive) FROM coverage_1m FINAL WHERE symbol = 'BTCUSDT'"
    )[0]
    assert (live, archive) == (AGGS // 2 - 4, AGGS)


def test_coverage_counts_a_trade_stored_twice_once_before_any_merge(env, sim_url) -> None:
    """Two sessions stored the same trades, one from the stream, one from REST: two rows each
    until ClickHouse merges them. coverage_1m counts each trade once, without OPTIMIZE."""
    day = GOOD[1]
    wh = env[0]["warehouse"]
    _live_session(env, sim_url, day, origins=("stream", "rest"))
    rows = coverage_rows(wh, SYMBOLS, [date.fromisoformat(day)])
    raw = wh.query_rows("SELECT count() FROM trades WHERE source = 'binance'")[0][0]
    assert raw == 2 * (AGGS // 2) * len(SYMBOLS)  # stored twice and still not merged
    live = pc.sum(rows["live"]).as_py() or 0
    rest = pc.sum(rows["rest"]).as_py() or 0
    assert live + rest == (AGGS // 2) * len(SYMBOLS)


def test_coverage_states() -> None:
    ts = [0, 60_000, 120_000, 180_000, 240_000]
    rows = pa.table(
        {
            "symbol": ["BTCUSDT"] * 5,
            "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "live": pa.array([0, 3, 1, 3, 0], pa.uint64()),
            "rest": pa.array([0, 0, 1, 1, 0], pa.uint64()),  # REST repairs count as stored
            "archive": pa.array([5, 3, 3, 3, 7], pa.uint64()),
        }
    )
    summary, states = coverage_summary(rows)
    assert summary == [("BTCUSDT", date(1970, 1, 1), 21, 7, 2, 1, 3, 1)]
    assert states[0, :5].tolist() == [1, 2, 3, 4, 1]


def test_quant_backfill_runs_the_crypto_history_job(env, sim_url, quant_home, monkeypatch) -> None:
    from typer.testing import CliRunner

    from quant_cli.main import app

    resources, _ = env
    monkeypatch.setenv("CLICKHOUSE_URL", resources["warehouse"].url)
    monkeypatch.setenv("BINANCE_ARCHIVE_URL", sim_url)
    monkeypatch.setenv("LAKE_URL", f"file://{quant_home / 'lake'}")
    days = GOOD[:2]
    result = CliRunner().invoke(
        app, ["backfill", "--from", days[0], "--to", days[-1], "--job", "crypto_history_job"]
    )
    assert result.exit_code == 0, result.output
    assert "2 partitions in 1 runs; failed: 0" in result.output
    wh = resources["warehouse"]
    assert wh.query_rows(
        "SELECT session_date, count() FROM trades WHERE source = 'binance_archive' "
        "GROUP BY session_date ORDER BY session_date"
    ) == [(date.fromisoformat(d), AGGS * len(SYMBOLS)) for d in days]
    for table in ("bars_1m", "binance_klines_1m", "coverage_1m"):
        assert wh.scalar(f"SELECT count() FROM {table}") > 0, table


def test_a_missing_file_allowed_by_config_is_skipped_and_listed(env) -> None:
    day = FAULTS["missing"][-10:]
    config = {"allow_missing_symbols": ["BTCUSDT"]}
    result = run(
        env,
        [crypto_archive_trades],
        day,
        run_config={"ops": {"crypto_archive_trades": {"config": config}}},
    )
    assert result.success, failure_text(result)
    stored = env[0]["warehouse"].query_rows(
        "SELECT symbol, count() FROM trades WHERE source = 'binance_archive' GROUP BY symbol"
    )
    assert stored == [("ETHUSDT", AGGS)]
    files = result.asset_materializations_for_node("crypto_archive_trades")[0].metadata
    assert files["files"].value == [f"ETHUSDT-aggTrades-{day}.zip"]
