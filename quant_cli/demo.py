"""``make demo``: the main job on embedded defaults, with no servers, keys or network.

1. starts the chDB-backed ClickHouse endpoint (data under QUANT_HOME/warehouse),
2. materialises the ClickHouse schema assets,
3. backfills 5 NYSE sessions of 1-minute bars, daily bars, option chain snapshots and option
   bars for a few symbols from the synthetic provider,
4. runs a live session of about a minute against the local Binance simulator with faults, as a
   run of ``live_ingest_job`` (the UI shows it, with its per-minute metadata), keeping the
   latest values in a private Redis (QUANT_HOME/redis) when redis-server is there (installed
   with apt-get when missing and possible),
5. replay-verifies that session against ClickHouse (also as the Dagster asset with checks),
6. asks the data service (`quant serve api`, token in QUANT_HOME/api-token) for the latest
   values, runs the report's `curl` line for the same request and prints its answer, stops
   what it started, and prints the commands that serve the same data again (`make dev`, or
   `quant serve api --local` for the data API alone) with the `curl` line, which works as
   printed while either runs. Runs land in the Dagster instance
   under QUANT_HOME/dagster, so the UI shows them.
A second run reuses the data: every write replaces its slice.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, date, datetime
from pathlib import Path

from quant_cli.dev import dagster_home
from quant_resources.settings import (
    demo_live_seconds,
    equity_symbols_text,
    quant_home,
    redact_url,
)

SYMBOLS = "SPY,QQQ,AAPL"
LIVE_SECONDS = demo_live_seconds()
FAULTS = "disconnect:2,duplicate:4,malformed:3,reorder:3,shutdown:1"


def step(n: int, text: str) -> None:
    print(f"\n[{n}/6] {text}", flush=True)


def main() -> int:
    home = quant_home()
    os.environ["QUANT_HOME"] = str(home)  # every child process and Dagster run sees the same
    os.environ.setdefault("QUANT_EQUITY_SOURCE", "synthetic")
    os.environ.setdefault("QUANT_EQUITY_SYMBOLS", SYMBOLS)
    os.environ.setdefault("QUANT_OPTION_UNDERLYINGS", "SPY")
    os.environ["DAGSTER_HOME"] = str(dagster_home(home))  # SQLite instance in QUANT_HOME
    started = time.monotonic()
    from quant_dev.processes import binance_simulator, warehouse_endpoint
    from quant_dev.serving import ApiServer, local_redis
    from quant_resources.settings import warehouse_dir

    step(1, f"starting the ClickHouse endpoint on chDB ({warehouse_dir()})")
    with warehouse_endpoint(warehouse_dir()) as url, local_redis(home) as (redis_url, note):
        os.environ["CLICKHOUSE_URL"] = url
        if redis_url:
            os.environ["REDIS_URL"] = redis_url
        print(f"      redis {redact_url(redis_url) if redis_url else ''} {note}", flush=True)
        report = run(home)
        # Boots while the live session runs (the live session does not need it).
        api = ApiServer(home, env={"CLICKHOUSE_URL": url}).start()
        with binance_simulator(
            "--symbols",
            "btcusdt,ethusdt",
            "--rate",
            "200",
            "--faults",
            FAULTS,
            "--fault-gap",
            "600",
        ) as (_sim, ws_url, rest_url):
            step(
                4,
                f"live session of {LIVE_SECONDS:.0f} s against the Binance simulator "
                f"({ws_url}, faults {FAULTS})",
            )
            live = live_session(ws_url, rest_url)
            faults = json.loads(urllib.request.urlopen(f"{rest_url}/_sim/stats").read())
        print(
            f"      {live['trades_total']:,} trades; {live['minutes_reported']} reports to Dagster "
            "(one per exchange minute, one at the stop)",
            flush=True,
        )
        step(5, f"replay-verifying session {live['session_id']}")
        replay_report = verify(live["session_id"])
        step(6, "asking the data service for the latest values")
        try:
            served = ask_api(api, home)
        finally:
            api.stop()
        print_report(report, live, faults, replay_report, time.monotonic() - started, served)
    return 0 if replay_report["ok"] and report["checks_failed"] == 0 else 1


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run(home: Path) -> dict:
    import dagster as dg

    from quant_core.calendar import session, trading_days
    from quant_definitions import defs
    from quant_resources.migrations import load

    instance = dg.DagsterInstance.get()
    checks = {"passed": 0, "failed": 0}

    def execute(job: str, **kwargs) -> None:
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET, **kwargs
        )
        for event in result.all_events:
            if event.event_type_value == "ASSET_CHECK_EVALUATION":
                checks["passed" if event.event_specific_data.passed else "failed"] += 1
        if not result.success:
            failure = result.get_step_failure_events()
            detail = failure[0].event_specific_data.error.message if failure else "failed"
            raise SystemExit(f"{job} failed: {detail}")

    step(2, "materialising the ClickHouse schema assets")
    execute("clickhouse_schema_job", partition_key=load("clickhouse")[-1].key)

    now = datetime.now(UTC)
    days = [
        d for d in trading_days(date(now.year - 1, 1, 1), now.date()) if session(d).post_close < now
    ][-5:]
    first, last = days[0].isoformat(), days[-1].isoformat()
    step(
        3,
        f"backfilling {first}..{last} ({len(days)} sessions) of "
        f"{equity_symbols_text()} from the synthetic provider",
    )
    ranged = {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }
    execute("historical_daily_job", tags=ranged)
    print("      1m and 1d bars done", flush=True)
    for day in days:
        execute("option_snapshot_job", partition_key=day.isoformat())
    print("      option chain snapshots done", flush=True)
    execute("option_bars_job", tags=ranged)
    print("      option bars done", flush=True)
    return {
        "checks_passed": checks["passed"],
        "checks_failed": checks["failed"],
        "days": (first, last),
    }


def live_session(ws_url: str, rest_url: str) -> dict:
    """A run of ``live_ingest_job`` on the demo's instance; returns the metadata of its stop
    (the numbers the UI shows for live_trades and live_bars_1m, which the report prints)."""
    import dagster as dg

    from quant_definitions import defs

    os.environ["BINANCE_WS_URL"], os.environ["BINANCE_REST_URL"] = ws_url, rest_url
    config = {"symbols": "btcusdt,ethusdt", "duration_s": LIVE_SECONDS, "status_line": True}
    result = defs.resolve_job_def("live_ingest_job").execute_in_process(
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config={**QUIET, "ops": {"live_ingest": {"config": config}}},
    )
    if not result.success:
        failure = result.get_step_failure_events()
        detail = failure[0].event_specific_data.error.message if failure else "failed"
        raise SystemExit(f"live_ingest_job failed: {detail}")
    events = result.asset_materializations_for_node("live_ingest")
    last = {}
    for event in events:  # the stop's materialisations come last
        last.update({k: v.value for k, v in event.metadata.items()})
    last["minutes_reported"] = len(events) // 2
    return last


def verify(session_id: str) -> dict:
    import dagster as dg

    from quant_assets.replay import replay_sessions
    from quant_definitions import defs

    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(replay_sessions.name, [session_id])
    # The named job, as the new_session_logs sensor runs it: the UI lists the run under it
    result = defs.resolve_job_def("replay_verification_job").execute_in_process(
        partition_key=session_id, instance=instance, raise_on_error=False, run_config=QUIET
    )
    checks = {
        e.event_specific_data.asset_check_key.name: e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    meta = result.asset_materializations_for_node("replay_verification")
    values = {k: v.value for k, v in meta[0].metadata.items()} if meta else {}
    print(f"      {values.get('trades', 0):,} trades replayed", flush=True)
    return {
        "ok": result.success and all(checks.values()),
        "checks": checks,
        "digest": values.get("final_digest", "?"),
        "trades": values.get("trades", 0),
        "bars": values.get("bars", 0),
    }


def _pairs(counts: dict) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"


def ask_api(api, home: Path) -> dict:
    """GET /v1/latest of the first live symbol from the demo's own API: the status and where
    each value came from; then the `curl` line the report prints, run as printed (when curl is
    installed), with its answer. Also the command that serves the same data again after the
    demo, on the same port, so the printed pair works as printed once the demo has ended."""
    from quant_dev.serving import API_PORT, LATEST_PATH, curl_line

    path = LATEST_PATH
    base = api.wait_ready()
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {api.token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        status, body = answer.status, json.loads(answer.read())
    origins = {k: v["from"] for k, v in body.items() if isinstance(v, dict) and "from" in v}
    curl = curl_line(home, base, path)
    if shutil.which("curl"):
        ran = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
        said = ran.stdout.strip() or f"(no answer; curl exit status {ran.returncode})"
    else:
        said = "(curl is not installed here: the answer above came through Python's urllib)"
    quant = Path(sys.executable).with_name("quant")
    command = [str(quant)] if quant.exists() else [sys.executable, "-m", "quant_cli.main"]
    command += ["serve", "api", "--local"]
    if api.port != API_PORT:
        command += ["--port", str(api.port)]
    serve = f"QUANT_HOME={shlex.quote(str(home))} {shlex.join(command)}"
    return {"status": status, "origins": origins, "curl": curl, "said": said, "serve": serve}


def print_report(
    report: dict, live: dict, faults: dict, replay: dict, seconds: float, served: dict
) -> None:
    """Every number as Dagster shows it: table counts by query, the live numbers from the live
    run's last materialisation, the replay's from replay_verification's."""
    from quant_resources.warehouse import WarehouseResource

    wh = WarehouseResource()
    tables = [
        "bars_1m",
        "bars_1d",
        "options_quotes",
        "option_bars_1m",
        "trades",
        "quotes",
        "telemetry",
    ]
    rows = {
        t: wh.scalar(f"SELECT count() FROM {t} FINAL")
        if t != "telemetry"
        else wh.scalar("SELECT count() FROM telemetry")
        for t in tables
    }
    injected = faults.get("faults_injected") or faults.get("faults") or {}
    print("\n" + "=" * 72)
    print(f"quant demo report ({seconds:.0f} s)")
    print("-" * 72)
    print("rows per table (ClickHouse, FINAL):")
    for table, count in rows.items():
        print(f"  {table:<16} {count:>10,}")
    print(f"historical sessions   {report['days'][0]} .. {report['days'][1]}")
    print(
        f"asset checks          {report['checks_passed']} passed, {report['checks_failed']} failed"
    )
    print(f"faults survived       {_pairs(injected)}")
    print(
        f"live session          {live['session_id']}: {live['trades_total']:,} trades, "
        f"{live['bar_versions_total']:,} bar versions, {live['reconnects']} reconnects, "
        f"{live['handovers']} handovers, {live['duplicates_dropped']:,} duplicates dropped"
    )
    print(
        f"gaps repaired         {live['gaps_repaired']} of {live['gaps_opened']} gaps, "
        f"{live['rest_trades']:,} trades from REST"
    )
    checks = ", ".join(
        f"{name} {'passed' if ok else 'FAILED'}" for name, ok in replay["checks"].items()
    )
    print(
        f"replay verification   {checks}; {replay['trades']:,} trades, {replay['bars']:,} bars, "
        f"digest {replay['digest']}"
    )
    print("-" * 72)
    origins = ", ".join(f"{k} from {v}" for k, v in served["origins"].items())
    print(f"data API              GET /v1/latest/BTCUSDT: HTTP {served['status']}, {origins}")
    print(f"  $ {served['curl']}")
    print(f"  {served['said']}")
    print("-" * 72)
    print("The demo has stopped its servers. The UI and the data API on the same data:")
    print("  make dev   (the UI at http://127.0.0.1:3000; it prints the data API's address)")
    print("or the data API alone (its warehouse and Redis too; Ctrl-C stops them):")
    print(f"  {served['serve']}")
    print("then, from another shell:")
    print(f"  {served['curl']}")
    print("=" * 72)


if __name__ == "__main__":
    sys.exit(main())
