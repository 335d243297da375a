"""The live pipeline's guarantees, proved with real processes: ``quant sim binance`` with faults,
``quant live`` as a subprocess (SIGKILLed, SIGTERMed), and the ClickHouse endpoint of the test
services.

Zero lost trades: the stored aggTrade ids of every symbol are contiguous with no duplicate, and
each stored trade equals the exchange's REST answer. Identical to a fault-free run: every bar
of a minute the session fully covered equals the simulator's own kline, which it computes from
its trade history with its own plain code, whatever faults the connection saw.

The three scenarios run concurrently (each with its own simulator and database) because each
needs a whole exchange minute inside its run; one at a time they would take over 6 minutes.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from quant_core.replay import compare_bars, replay
from quant_resources.replay_check import warehouse_bars
from tests.live_helpers import (
    MINUTE_MS,
    Sim,
    check_bars,
    check_trades,
    drop,
    fresh_warehouse,
    live_env,
    quant_here,
    seconds_to_minute_end,
    start_live,
    start_sim,
    stop_all,
    stored_bars,
)

pytestmark = pytest.mark.xdist_group("live")

SYMBOLS = ("BTCUSDT", "ETHUSDT")
SYMBOL_ARG = ",".join(s.lower() for s in SYMBOLS)
# Over 100 faults of every kind. Few connection-killing ones: each reconnect grows the
# client's backoff (0.5 s doubling to 30 s, reset after 60 healthy seconds), and a minute
# offline would not fit the run; what is missed offline is repaired from REST like any gap.
# A stall or shutdown that falls due while the previous one is still under way is absorbed by
# it (and not counted), hence their short durations and the counts above 100.
FAULTS = "disconnect:4,slowreader:2,stall:8:0.5,shutdown:6:0.3,malformed:35,duplicate:35,reorder:25"
FAULT_KINDS = ("disconnect", "stall", "malformed", "duplicate", "reorder", "shutdown", "slowreader")
# Each simulator's exchange clock is set back to put a minute boundary this far after it is
# up, instead of waiting up to a minute for the wall clock's next one. `quant live` usually
# stores its first trade well before it; on a loaded machine it may not, and then the next
# boundary is the first one the run covers whole (see ready_boundary).
MINUTE_IN_S = 15.0


def ready_boundary(sim: Sim, warehouse, live) -> float:
    """Exchange time of the first minute boundary after `quant live` stored its first trade,
    at least a second away: the first minute the run covers whole. Waiting for that state,
    not for a guess of the start-up time, keeps a slow start from losing the minute."""
    live.child.wait_for(
        "quant live to store its first trade",
        lambda: warehouse.scalar("SELECT count() FROM trades") > 0,
        timeout=120,
        every=0.2,
    )
    now = sim.now()
    wait = seconds_to_minute_end(now)
    return now + (wait if wait >= 1.0 else wait + 60)


def sigterm_at(sim: Sim, live, exchange_s: float) -> dict:
    """The clean stop (SIGTERM, as Ctrl-C) at an exchange time; -> the run's summary."""
    time.sleep(max(0.0, exchange_s - sim.now()))
    if live.proc.poll() is not None:
        raise AssertionError(f"quant live died before SIGTERM\n{live.explain()}")
    live.signal(signal.SIGTERM)
    return live.summary(120)


def soak(workdir: Path, clickhouse_url: str) -> dict:
    warehouse = fresh_warehouse(clickhouse_url)
    sim = start_sim(
        workdir,
        "--rate",
        "500",
        "--seed",
        "21",
        "--fault-gap",
        "600",
        "--faults",
        FAULTS,
        "--symbols",
        SYMBOL_ARG,
        minute_in=MINUTE_IN_S,
    )
    live = start_live(workdir, "soak", live_env(sim, warehouse, workdir / "home"), SYMBOL_ARG)
    # One whole minute after the first boundary, plus time for its bar to become final; then
    # the clean stop (SIGTERM, as Ctrl-C).
    summary = sigterm_at(sim, live, ready_boundary(sim, warehouse, live) + 63)
    sim.pause()
    return {"warehouse": warehouse, "sim": sim, "summary": summary, "stats": sim.stats()}


def sigkill(workdir: Path, clickhouse_url: str) -> dict:
    warehouse = fresh_warehouse(clickhouse_url)
    sim = start_sim(
        workdir, "--rate", "300", "--seed", "22", "--symbols", SYMBOL_ARG, minute_in=MINUTE_IN_S
    )
    env = live_env(sim, warehouse, workdir / "home")
    first = start_live(workdir, "before-kill", env, SYMBOL_ARG)
    boundary = ready_boundary(sim, warehouse, first)
    # Killed 15 s into a minute the first process saw start: that minute's bar was open, its
    # trades partly stored; the second process must rebuild it and repair the rest.
    time.sleep(max(0.0, boundary + 15 - sim.now()))
    if first.proc.poll() is not None:
        raise AssertionError(f"quant live died before the kill\n{first.explain()}")
    stored_before = warehouse.scalar("SELECT count() FROM trades")
    killed_ms = int(sim.now() * 1000)
    first.kill()
    duration = boundary + 63 - sim.now()
    second = start_live(workdir, "after-kill", env, SYMBOL_ARG, max(duration, 20.0))
    summary = second.summary(duration + 120)
    sim.pause()
    return {
        "warehouse": warehouse,
        "sim": sim,
        "summary": summary,
        "killed_ms": killed_ms,
        "stored_before": stored_before,
    }


def clean_stop(workdir: Path, clickhouse_url: str) -> dict:
    warehouse = fresh_warehouse(clickhouse_url)
    sim = start_sim(
        workdir, "--rate", "300", "--seed", "23", "--symbols", SYMBOL_ARG, minute_in=MINUTE_IN_S
    )
    live = start_live(workdir, "sigterm", live_env(sim, warehouse, workdir / "home"), SYMBOL_ARG)
    # 0.8 s after a minute ends its bar is not final yet (lateness 2 s): only the clean stop's
    # flush writes it, and the minute just begun must not be written at all.
    summary = sigterm_at(sim, live, ready_boundary(sim, warehouse, live) + 60.8)
    sim.pause()
    return {"warehouse": warehouse, "sim": sim, "summary": summary}


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory, clickhouse_url):
    root = tmp_path_factory.mktemp("live")
    pool = ThreadPoolExecutor(3)
    futures: dict[str, Future] = {
        name: pool.submit(fn, root / name, clickhouse_url)
        for name, fn in (("soak", soak), ("sigkill", sigkill), ("clean", clean_stop))
    }
    pool.shutdown(wait=True)
    yield futures
    for future in futures.values():
        if future.exception() is None:
            drop(future.result()["warehouse"])
    # Every process a scenario started, also those of a scenario that failed half-way.
    stop_all()


def _result(scenarios, name: str) -> dict:
    return scenarios[name].result()  # re-raises the scenario's own failure


def test_soak_with_every_fault_loses_and_duplicates_nothing(scenarios):
    run = _result(scenarios, "soak")
    stats, summary, warehouse, sim = run["stats"], run["summary"], run["warehouse"], run["sim"]
    fired = stats["faults"]
    assert all(fired[kind] > 0 for kind in FAULT_KINDS), fired
    assert sum(fired.values()) >= 100, fired
    assert summary["duplicates"] > 0 and summary["gaps"] > 0 and summary["trades_repaired"] > 0
    assert summary["rejects"], "the malformed frames were not rejected"
    compared = []
    for symbol in SYMBOLS:
        trades = check_trades(warehouse, sim, symbol)
        compared += check_bars(warehouse, sim, trades, summary["stop_exchange_ms"])
    assert compared, "the run covered no whole minute"
    telemetry = dict(
        warehouse.query_rows(
            "SELECT metric, sum(value) FROM telemetry WHERE session_id = {s:String} "
            "GROUP BY metric",
            {"s": summary["session_id"]},
        )
    )
    for metric in ("messages", "lag_p99_ms", "reconnects", "gaps_opened"):
        assert metric in telemetry, sorted(telemetry)
    assert telemetry["messages"] == summary["frames"]
    assert telemetry["reconnects"] > 0 and telemetry["gaps_opened"] > 0, telemetry


def test_sigkill_then_restart_resumes_without_loss(scenarios):
    run = _result(scenarios, "sigkill")
    warehouse, sim, summary = run["warehouse"], run["sim"], run["summary"]
    assert run["stored_before"] > 0, "the first process stored nothing before it was killed"
    # The trades between the last stored one and the new stream came from REST.
    assert summary["trades_repaired"] > 0 and summary["gaps"] > 0, summary
    killed_minute = run["killed_ms"] // MINUTE_MS * MINUTE_MS
    for symbol in SYMBOLS:
        trades = check_trades(warehouse, sim, symbol)
        minutes = check_bars(warehouse, sim, trades, summary["stop_exchange_ms"])
        assert killed_minute in minutes, (killed_minute, minutes)


def test_sigterm_writes_every_ended_minute_and_replays_identically(scenarios, tmp_path):
    run = _result(scenarios, "clean")
    warehouse, sim, summary = run["warehouse"], run["sim"], run["summary"]
    stop_ms = summary["stop_exchange_ms"]
    open_minute = stop_ms // MINUTE_MS * MINUTE_MS
    for symbol in SYMBOLS:
        trades = check_trades(warehouse, sim, symbol)
        check_bars(warehouse, sim, trades, stop_ms)
        bars = stored_bars(warehouse, symbol)
        # Every minute from the session's first trade to the stop, the partial first one
        # included; never the minute still running.
        first_minute = trades.first_ms // MINUTE_MS * MINUTE_MS
        assert sorted(bars) == list(range(first_minute, open_minute, MINUTE_MS)), (
            symbol,
            sorted(bars),
            stop_ms,
        )
        assert max(bars) + MINUTE_MS - 1 < stop_ms
    session = Path(summary["session_dir"])
    verify = quant_here(None, "replay", "verify", str(session), "--json")
    assert verify.exit_code == 0, verify.output[-5000:]
    replayed = replay(session)
    assert replayed.summary["stop_exchange_ms"] == stop_ms
    assert replayed.summary["final_digest"] == summary["final_digest"]
    assert replayed.bars.num_rows == 2 * len(range(first_minute, open_minute, MINUTE_MS))
    diff = compare_bars(replayed.bars, warehouse_bars(warehouse, replayed.bars))
    assert diff is None, diff


def test_helpers_fail_on_a_lost_trade(scenarios):
    """The checks above can fail: delete one stored trade of the clean run and they must."""
    run = _result(scenarios, "clean")
    warehouse, sim = run["warehouse"], run["sim"]
    lo, hi = warehouse.query_rows(
        "SELECT min(trade_id), max(trade_id) FROM trades WHERE symbol = 'BTCUSDT'"
    )[0]
    victim = (lo + hi) // 2
    warehouse.client.command(
        "ALTER TABLE trades DELETE WHERE symbol = 'BTCUSDT' AND trade_id = {t:UInt64}",
        parameters={"t": victim},
        settings={"mutations_sync": 2},
    )
    with pytest.raises(AssertionError, match="missing"):
        check_trades(warehouse, sim, "BTCUSDT")
