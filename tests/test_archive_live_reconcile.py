"""The real ``quant live`` over a day the archive simulator serves, reconciled by
``crypto_trades.matches_live_trades`` and counted in ``coverage_1m``.

The archive day comes from ``quant sim binance-archive``; an hour of its aggTrades is recorded
as a session log and served by ``quant sim binance --source`` (same ids, prices, sizes and
times: the exchange later publishes exactly what it streamed). ``quant live`` ingests it into
the warehouse, then ``crypto_trades`` backfills the day from the archive simulator.

* With the ``drops`` fault the stream misses trade frames; the live job repairs them from REST,
  and everything reconciles to zero differences, with the repaired trades counted in
  ``coverage_1m.rest`` (not in ``live``).
* With the ``lose`` fault the simulator leaves four trades out of the stream and forgets them
  in its REST history too (a loss at the wire no repair can undo): the live job stops waiting
  for them once REST answers past them, and the check reports exactly those ids.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quant_assets.crypto_history import crypto_archive_trades, crypto_coverage_1m
from quant_dev.processes import archive_simulator
from quant_resources.binance_archive import ArchiveClient, BinanceArchiveResource
from quant_resources.lake import LakeResource
from quant_resources.session_writer import SessionWriter
from quant_resources.store import HistoricalStore
from tests.dagster_helpers import failure_text
from tests.live_helpers import (
    MINUTE_MS,
    drop,
    fresh_warehouse,
    live_env,
    start_live,
    start_sim,
    stop_when_recorded_is_stored,
)

pytestmark = pytest.mark.xdist_group("live")

DAY = date(2024, 12, 30)  # millisecond files
AGGS = 20_000  # per symbol-day: ~14 a minute
FIRST_MINUTE, MINUTES = 600, 45  # live recorded 10:00-10:45 UTC


@pytest.fixture(autouse=True)
def btc_only(monkeypatch) -> None:
    monkeypatch.setenv("QUANT_CRYPTO_SYMBOLS", "BTCUSDT")


@pytest.fixture(scope="module")
def archive_url():
    args = ["--symbols", "btcusdt", "--first", DAY.isoformat(), "--last", DAY.isoformat()]
    with archive_simulator(*args, "--aggs-per-day", str(AGGS)) as (_, url):
        yield url


def recorded_hour(archive_url: str, tmp_path: Path) -> pa.Table:
    """The archive's trades of whole minutes FIRST_MINUTE .. +MINUTES (aggTrades columns)."""
    with ArchiveClient(archive_url, cache_dir=tmp_path / "cache") as client:
        day = client.day("aggTrades", "BTCUSDT", DAY)
    ms = pc.cast(pc.cast(day["ts_event"], pa.timestamp("ms", tz="UTC")), pa.int64())
    start = pc.cast(pc.cast(pa.scalar(DAY), pa.timestamp("ms")), pa.int64()).as_py()
    lo = start + FIRST_MINUTE * MINUTE_MS
    mask = pc.and_(pc.greater_equal(ms, lo), pc.less(ms, lo + MINUTES * MINUTE_MS))
    return day.filter(mask)


def _decimal(scaled: int) -> str:
    return f"{scaled // 10**8}.{scaled % 10**8:08d}"


def write_capture(root: Path, trades: pa.Table) -> Path:
    """A session log of ``trades`` as Binance streamed them (aggTrade frames, recorded 1 ms
    apart after the trade)."""
    writer = SessionWriter(root, "capture", "binance", ["aggTrade"], ["BTCUSDT"], "test")
    last = 0
    for row in trades.to_pylist():
        t = int(row["ts_event"].timestamp() * 1000)
        data = {
            "e": "aggTrade",
            "E": t + 3,
            "s": "BTCUSDT",
            "a": row["agg_trade_id"],
            "p": _decimal(row["price"]),
            "q": _decimal(row["qty"]),
            "f": row["first_trade_id"],
            "l": row["last_trade_id"],
            "T": t,
            "m": row["is_buyer_maker"],
            "M": row["is_best_match"],
        }
        frame = orjson.dumps({"stream": "btcusdt@aggTrade", "data": data})
        writer.append("ws", 1, (t + 1) * 1_000_000, frame)
        last = t
    writer.close(last)
    return root / "capture"


def live_then_backfill(
    tmp_path: Path, clickhouse_url: str, archive_url: str, capture: Path, faults: str
) -> tuple[dict, dg.ExecuteInProcessResult]:
    """``quant live`` on the capture, then crypto_trades + crypto_coverage_1m for DAY."""
    warehouse = fresh_warehouse(clickhouse_url)
    args = ["--source", str(capture), "--rate", "400", "--seed", "3", "--fault-gap", "100"]
    sim = start_sim(tmp_path / "sim", *args, *(["--faults", faults] if faults else []))
    try:
        env = live_env(sim, warehouse, tmp_path / "home")
        live = start_live(tmp_path, "live", env, "btcusdt", streams="aggTrade")
        # Stopped once every trade is stored (was a fixed 15 s --duration).
        summary = stop_when_recorded_is_stored(live, sim, warehouse, ["BTCUSDT"])
        stats = sim.stats()
        lake = LakeResource(url=f"file://{tmp_path / 'lake'}")
        resources = {
            "warehouse": warehouse,
            "store": HistoricalStore(warehouse=warehouse, lake=lake),
            "binance_archive": BinanceArchiveResource(
                base_url=archive_url, cache_dir=str(tmp_path / "cache")
            ),
        }
        result = dg.materialize(
            [crypto_archive_trades, crypto_coverage_1m],
            partition_key=DAY.isoformat(),
            resources=resources,
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
        assert result.success, failure_text(result)
        origins = dict(
            warehouse.query_rows(
                "SELECT origin, count() FROM trades FINAL WHERE source = 'binance' GROUP BY origin"
            )
        )
        coverage = warehouse.query_rows(
            "SELECT sum(live), sum(rest), sum(archive) FROM coverage_1m FINAL "
            "WHERE symbol = 'BTCUSDT' AND live + rest > 0"
        )[0]
        found = {"summary": summary, "stats": stats, "origins": origins, "coverage": coverage}
        return found, result
    finally:
        sim.stop()
        drop(warehouse)


def live_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if data.asset_check_key.name == "matches_live_trades":
                return data
    raise AssertionError("no matches_live_trades evaluation")


def test_live_with_dropped_frames_repaired_by_rest_reconciles_to_zero(
    tmp_path, clickhouse_url, archive_url
) -> None:
    hour = recorded_hour(archive_url, tmp_path)
    capture = write_capture(tmp_path / "rec", hour)
    out, result = live_then_backfill(tmp_path, clickhouse_url, archive_url, capture, "drops:3:5")
    assert out["stats"]["frames_dropped"] == 15, out["stats"]
    check = live_check(result)
    assert check.passed, check.metadata["table"].value
    assert check.metadata["differences"].value == 0
    assert check.metadata["live_trades"].value == hour.num_rows
    # The repaired trades are stored with origin 'rest' and counted apart in coverage_1m.
    assert out["origins"].get("rest", 0) >= 15, out["origins"]
    assert sum(out["origins"].values()) == hour.num_rows
    live, rest, archive = out["coverage"]
    assert (live, rest) == (out["origins"]["stream"], out["origins"]["rest"])
    assert live + rest == archive == hour.num_rows
    coverage = result.asset_materializations_for_node("crypto_coverage_1m")[0].metadata
    assert coverage["live_missed_trades"].value == 0
    assert coverage["live_rest_trades"].value == out["origins"]["rest"]


def test_live_with_trades_lost_at_the_wire_is_reported_with_the_missing_ids(
    tmp_path, clickhouse_url, archive_url
) -> None:
    hour = recorded_hour(archive_url, tmp_path)
    capture = write_capture(tmp_path / "rec", hour)
    out, result = live_then_backfill(tmp_path, clickhouse_url, archive_url, capture, "lose:1:4")
    lost = out["stats"]["lost_agg_ids"]["BTCUSDT"]
    assert out["stats"]["trades_lost"] == len(lost) == 4, out["stats"]
    assert lost == list(range(lost[0], lost[0] + 4))  # one firing: four frames in a row
    assert sum(out["origins"].values()) + len(lost) == hour.num_rows, out["origins"]
    check = live_check(result)
    assert not check.passed
    assert check.metadata["missing_from_live"].value == 4
    assert check.metadata["extra_in_live"].value == 0
    assert check.metadata["missing_ids"].value == f"BTCUSDT: {lost[0]}-{lost[-1]}"
    coverage = result.asset_materializations_for_node("crypto_coverage_1m")[0].metadata
    assert coverage["live_missed_trades"].value == 4
