"""In a running ``dagster dev`` (webserver and daemon, started by ``scripts/dev``): the
``live_ingest_supervisor`` starts the live run; while it runs, ``live_trades`` has its
minute-level metadata, plots and the supervisor as its automation (read through the UI's GraphQL
and in a real browser: Debian's Chromium, Playwright); clicking the run page's Terminate button
stops it cleanly, with its session closed and its bars written, and the run's page reads as a
clean cancel (one line, no step failure, no stack trace); the supervisor does not start another;
and the ``new_session_logs`` sensor verifies the closed session against the warehouse.

The same ``dagster dev`` shows the order-book asset ``live_book_snapshots`` with its checks, and
the ``crypto_history`` assets of a day that ``quant backfill`` wrote into the instance meanwhile:
their checks and the coverage chart, drawn. With QUANT_SCREENSHOTS=1 the live asset's plots are
saved to docs/img/ (the README shows them)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from quant_dev.processes import archive_simulator, free_port, quant, tail
from tests.dagster_dev import Dev, dagster_dev, terminate_in_browser  # ui3
from tests.live_helpers import drop, fresh_warehouse, live_env, start_sim
from tests.test_ui_backfill import DOCS_IMG, chromium, small_screenshot

# dagster dev, a live run through a minute's end, a browser and the supervisor's next tick
pytestmark = [pytest.mark.xdist_group("dagster_dev"), pytest.mark.timeout(600)]
CRYPTO_DAY = "2025-01-02"  # one UTC day of one symbol from the archive simulator
BOOK_CHECKS = (
    "book_snapshots_not_crossed",
    "book_snapshots_explained_by_updates",
    "book_top_agrees_with_book_ticker",
)
ACTIVE = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
MATERIALIZATIONS = """query { assetOrError(assetKey: {path: ["live_trades"]}) {
  ... on Asset { assetMaterializations(limit: 20) { runId metadataEntries { label } } } } }"""
EVENTS = """query($id: ID!) { logsForRun(runId: $id) {
  ... on EventConnection { events { __typename ... on MessageEvent { message } } } } }"""
AUTOMATION = """query { assetNodeOrError(assetKey: {path: ["live_trades"]}) {
  ... on AssetNode { targetingInstigators { ... on Sensor { name } } } } }"""
SENSOR_TICKS = """query { repositoriesOrError { ... on RepositoryConnection { nodes {
  sensors { name sensorState { ticks(limit: 5) { status timestamp skipReason } } } } } } }"""


def test_supervisor_keeps_one_run_and_terminate_stops_it_cleanly(tmp_path, clickhouse_url):
    warehouse = fresh_warehouse(clickhouse_url)
    symbols = "btcusdt,ethusdt"
    sim = start_sim(tmp_path / "sim", "--symbols", symbols, "--rate", "200", "--seed", "3")
    home, port = tmp_path / "home", free_port()
    env = live_env(
        sim,
        warehouse,
        home,
        QUANT_LIVE_AUTOSTART="1",
        QUANT_LIVE_SYMBOLS=symbols,
        QUANT_CRYPTO_SYMBOLS="BTCUSDT",
        QUANT_CRYPTO_HISTORY_START="2025-01-01",
        QUANT_SENSOR_INTERVAL_S="5",  # the supervisor's and session sensor's next ticks
    )
    log = tmp_path / "dagster-dev.log"
    archive_args = ["--symbols", "btcusdt", "--first", "2025-01-01", "--last", "2025-01-03"]
    try:
        with (
            archive_simulator(*archive_args, "--aggs-per-day", "500") as (_, archive_url),
            dagster_dev(env, port, log) as dev,
            chromium() as browser,  # one for every page of the test
        ):
            # A day of crypto_history, run from the terminal into the same instance while the
            # live run goes on: the UI shows such runs like its own.
            backfill = subprocess.Popen(
                quant(
                    "backfill",
                    "--job",
                    "crypto_history_job",
                    "--from",
                    CRYPTO_DAY,
                    "--to",
                    CRYPTO_DAY,
                ),
                env={**env, "BINANCE_ARCHIVE_URL": archive_url},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                run_id, session_id = _supervise(dev, browser, warehouse, home, log)
                output, _ = backfill.communicate(timeout=300)
            finally:
                backfill.kill()
            assert backfill.returncode == 0, output
            # Read in the browser while the sensors tick after the stop.
            _see_books_and_crypto_history(dev, browser)
            _after_the_stop(dev, run_id, session_id, log)
    finally:
        sim.stop()
        drop(warehouse)


def _supervise(dev: Dev, browser, warehouse, home: Path, log: Path) -> tuple[str, str]:
    """Up to the clean stop; returns the live run's and the closed session's ids."""
    first = dev.wait(
        "the supervisor starts a live run",
        lambda: [r for r in dev.runs("live_ingest_job") if r["status"] == "STARTED"],
        240,
    )
    assert len(first) == 1, first
    run_id = first[0]["runId"]
    dev.query("mutation { setNuxSeen }")  # what the sign-up prompt's Skip does, once
    dev.wait(
        "the running live run reports an ended minute of exchange time",
        lambda: [
            m
            for m in dev.query(MATERIALIZATIONS)["assetOrError"]["assetMaterializations"]
            if m["runId"] == run_id and {"label": "lag_p99_ms"} in m["metadataEntries"]
        ],
        180,
    )
    node = dev.query(AUTOMATION)["assetNodeOrError"]  # the page's "Automation details"
    assert [s["name"] for s in node["targetingInstigators"]] == ["live_ingest_supervisor"], node
    # The asset page shows the minute's numbers and the supervisor, and plots them
    _in_browser(dev, browser, "/assets/live_trades", "lag_p99_ms", "live_ingest_supervisor")
    _see_live_plots(dev, browser)
    # Terminate once a minute has ended with trades in it: its bar must be written by the
    # clean stop even if the lateness has not let it out yet.
    ended_minute = dev.wait(
        "the live run stores trades of an ended minute",
        lambda: [
            minute
            for minute, n in warehouse.query_rows(
                "SELECT max(toStartOfMinute(ts)), count() FROM trades "
                "WHERE source = 'binance' AND ts < toStartOfMinute(now64(3))"
            )
            if n
        ],
        180,
    )[0]
    terminate_in_browser(dev, browser, run_id)  # ui3: one helper with test_ui2_terminal_runs
    ended = dev.wait(
        "the terminated run ends",
        lambda: [
            r for r in dev.runs("live_ingest_job")
            if r["runId"] == run_id and r["status"] not in ACTIVE
        ],
        180,
    )  # fmt: skip
    assert ended[0]["status"] == "CANCELED", ended  # on request, though it stopped cleanly
    events = dev.query(EVENTS, id=run_id)["logsForRun"]["events"]
    kinds = [e["__typename"] for e in events]
    assert "ExecutionStepFailureEvent" not in kinds and "RunFailureEvent" not in kinds, kinds
    canceled = [e["message"] for e in events if e["__typename"] == "RunCanceledEvent"]
    assert len(canceled) == 1 and canceled[0].startswith("Stopped on request"), canceled
    _in_browser(
        dev, browser, f"/runs/{run_id}", "Stopped on request", "Canceled", absent="Stack Trace"
    )
    manifests = list((home / "sessions").glob("*/session.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["state"] == "closed" and manifest["footer"]["clean"] is True
    session_id = manifests[0].parent.name
    stored = warehouse.scalar(
        "SELECT count() FROM bars_1m WHERE source = 'binance' AND ts = {t:DateTime64(3, 'UTC')}",
        {"t": ended_minute},
    )
    assert stored >= 1, (  # written by the clean stop
        ended_minute,
        manifest["footer"],
        warehouse.query_rows("SELECT symbol, ts, version FROM bars_1m ORDER BY ts"),
        warehouse.query_rows(
            "SELECT toStartOfMinute(ts) m, count() FROM trades GROUP BY m ORDER BY m"
        ),
        tail(log, 40),
    )
    return run_id, session_id


def _after_the_stop(dev: Dev, run_id: str, session_id: str, log: Path) -> None:
    """The supervisor leaves the stopped run stopped, and new_session_logs verifies the
    closed session."""
    # A run a user stopped stays stopped: the supervisor's next tick says so, and no run starts.
    dev.wait(
        "the supervisor skips: the live run was stopped by a user",
        lambda: [
            tick
            for repo in dev.query(SENSOR_TICKS)["repositoriesOrError"]["nodes"]
            for sensor in repo["sensors"]
            if sensor["name"] == "live_ingest_supervisor"
            for tick in sensor["sensorState"]["ticks"]
            if "stopped by a user" in (tick["skipReason"] or "")
        ],
        180,
    )
    assert [r["runId"] for r in dev.runs("live_ingest_job")] == [run_id]
    # The closed session is found in the lake and verified against the warehouse.
    verified = dev.wait(
        "new_session_logs verifies the session",
        lambda: [
            r for r in dev.runs("replay_verification_job")
            if {"key": "dagster/partition", "value": session_id} in r["tags"]
            and r["status"] not in ACTIVE
        ],
        240,
    )  # fmt: skip
    assert verified[0]["status"] == "SUCCESS", tail(log, 80)


@contextlib.contextmanager
def _ui_page(dev: Dev, browser, path: str, height: int = 900):
    """A page of the shared Chromium on ``path`` of the UI (a loaded machine renders it
    slowly: a minute per step)."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    try:
        page.set_default_timeout(60_000)
        page.goto(f"{dev.base}{path}")
        yield page
    finally:
        page.close()


def _in_browser(dev: Dev, browser, path: str, *texts: str, absent: str | None = None) -> None:
    """Open ``path`` of the UI in headless Chromium and wait until every text shows and
    ``absent`` does not (the page is read every 2 s and reloaded every 30 s while the
    webserver is busy)."""
    with _ui_page(dev, browser, path) as page:
        for attempt in range(90):
            shown = page.inner_text("body")
            if all(text in shown for text in texts) and (absent or "\0") not in shown:
                return
            if attempt % 15 == 14:
                page.reload()
            page.wait_for_timeout(2000)
        page.screenshot(path=dev.log.with_suffix(".png"))
        raise AssertionError(
            f"{texts} not shown (or {absent!r} shown):\n{shown}\n{tail(dev.log, 40)}"
        )


def _see_live_plots(dev: Dev, browser) -> None:
    """The asset page's metadata, switched to Plots, draws the minutes' numbers (a chart per
    number); with QUANT_SCREENSHOTS=1 the page goes to docs/img/ (the README shows it)."""
    from playwright.sync_api import expect as see

    with _ui_page(dev, browser, "/assets/live_trades", height=1100) as page:
        # its accessible name starts with its icon's
        plots = page.get_by_role("button", name=re.compile(r"\bPlots$"))
        see(plots).to_be_visible()
        plots.click()
        see(page.get_by_text("lag_p99_ms", exact=True).first).to_be_visible()
        see(page.locator("canvas").first).to_be_visible()
        if os.environ.get("QUANT_SCREENSHOTS"):
            small_screenshot(page, DOCS_IMG / "live-trades-plots.webp")


def _see_books_and_crypto_history(dev: Dev, browser) -> None:
    """``live_book_snapshots`` lists its three checks; the crypto_history assets are in their
    group, their checks show their evaluation, passed, and the day's coverage chart is drawn."""
    from playwright.sync_api import expect as see

    with _ui_page(dev, browser, "/assets/live_book_snapshots?view=checks", height=1000) as page:
        # (listed: a long name is shown cut in the middle, its full text kept beside)
        for name in BOOK_CHECKS:
            see(page.get_by_text(name, exact=True).first).to_be_attached()
        page.goto(f"{dev.base}/locations/quant/asset-groups/crypto_history/lineage")
        for name in ("binance_klines_1m", "crypto_trades", "crypto_bars_1m"):
            see(page.get_by_text(name, exact=True).first).to_be_visible()
        for asset, check in (
            ("crypto_bars_1m", "matches_binance_klines"),
            ("crypto_trades", "matches_live_trades"),
        ):
            page.goto(f"{dev.base}/assets/{asset}?view=checks&checkDetail={check}")
            see(page.get_by_text(check, exact=True).first).to_be_attached()
            # its latest evaluation, of the day's partition, and its result
            see(page.get_by_text("Evaluation result", exact=True)).to_be_visible()
            see(page.get_by_text("Partition", exact=True)).to_be_visible()
            see(page.get_by_text(CRYPTO_DAY, exact=True).first).to_be_visible()
            see(page.get_by_text("Passed", exact=True).first).to_be_visible()
        page.goto(f"{dev.base}/assets/crypto_coverage_1m?view=partitions&partition={CRYPTO_DAY}")
        chart = page.get_by_role("img", name="coverage")
        see(chart).to_be_visible()
        # The data: URI was drawn (a broken image has no natural size).
        assert chart.evaluate("img => img.complete && img.naturalWidth") > 0
