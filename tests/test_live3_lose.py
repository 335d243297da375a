"""Trades lost for good (the simulator's ``lose`` fault: gone from the stream and from REST) are
counted as ``ids_absent`` in the live summary, its text line and the per-minute telemetry; the
fault covers the ``trade`` stream and ``/api/v3/historicalTrades`` as it does aggTrades. Also
``quant live --profile FILE`` writes a cProfile file ``pstats`` loads. Real processes: the
simulator, ``quant live --no-dagster`` and the test services' ClickHouse endpoint."""

from __future__ import annotations

import json
import pstats
import subprocess

import pytest

from quant_dev.processes import quant
from tests.live_helpers import drop, fresh_warehouse, live_env, start_sim, stop_all

pytestmark = pytest.mark.xdist_group("live")


def run_live(env: dict, stream: str, *extra: str) -> dict:
    done = subprocess.run(
        quant(
            "live",
            "--no-dagster",
            "--symbols",
            "btcusdt",
            "--streams",
            stream,
            "--duration",
            "6",
            "--lateness-ms",
            "200",
            "--json",
            *extra,
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def stored_ids(warehouse, stream: str) -> list[int]:
    rows = warehouse.query_rows(
        "SELECT trade_id FROM trades FINAL WHERE source = 'binance' AND symbol = 'BTCUSDT' "
        "AND stream = {st:String} ORDER BY trade_id",
        {"st": stream},
    )
    return [r[0] for r in rows]


@pytest.mark.parametrize("stream", ["aggTrade", "trade"])
def test_lost_trades_are_counted_as_absent_and_profile_is_written(
    tmp_path, clickhouse_url, stream
) -> None:
    warehouse = fresh_warehouse(clickhouse_url)
    try:
        sim = start_sim(
            tmp_path,
            *("--symbols", "btcusdt", "--rate", "300", "--seed", "7"),
            *("--faults", "lose:2:3", "--fault-gap", "200"),
        )
        env = live_env(sim, warehouse, tmp_path / "home")
        profile = tmp_path / "live.prof"
        summary = run_live(env, stream, "--profile", str(profile))
        stats = sim.stats()
        lost = stats["lost_agg_ids" if stream == "aggTrade" else "lost_trade_ids"]["BTCUSDT"]
        assert stats["trades_lost"] == len(lost) == 6, stats
        # Nothing of them anywhere: not stored, and counted as lost for good, not repaired
        # (a loss before the first trade received is no gap to anyone: not counted).
        ids = stored_ids(warehouse, stream)
        assert not set(lost) & set(ids)
        within = [i for i in lost if i > ids[0]]
        assert len(within) >= 3, (lost, ids[0])
        assert len(ids) + len(within) == ids[-1] - ids[0] + 1, "other trades are missing too"
        assert summary["ids_absent"] == len(within), summary
        minutes = warehouse.scalar(
            "SELECT sum(value) FROM telemetry WHERE session_id = {s:String} "
            "AND metric = 'ids_absent'",
            {"s": summary["session_id"]},
        )
        assert minutes == len(within)
        assert summary["profile"] == str(profile)
        functions = pstats.Stats(str(profile)).stats
        assert any(name == "_on_frames" for (_, _, name) in functions), "not the processing"
    finally:
        stop_all()
        drop(warehouse)


def test_summary_text_names_the_lost_trades() -> None:
    from quant_cli.live import describe
    from quant_resources.live.pipeline import LiveSummary

    summary = LiveSummary("s", "/tmp/s", ids_absent=1234)
    summary.profile = "/tmp/p.prof"
    text = describe(summary)
    assert "lost        1,234 trade ids missing from the stream that REST lacks too" in text
    assert "profile     /tmp/p.prof" in text
