"""In a running ``dagster dev`` (webserver and daemon, started by ``scripts/dev``): the
``live_ingest_supervisor`` starts the live run; while it runs, ``live_trades`` has its
minute-level metadata and the supervisor as its automation (read through the UI's GraphQL);
terminating it the way the UI's Terminate button does (the ``terminateRun`` GraphQL mutation)
stops it cleanly, with its session closed and its bars written, and the run's page reads as a
clean cancel (one line, no step failure) in a real browser (Debian's Chromium, Playwright); the
supervisor does not start another; and the ``new_session_logs`` sensor verifies the closed
session against the warehouse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quant_dev.processes import free_port, tail
from tests.dagster_dev import Dev, dagster_dev
from tests.live_helpers import drop, fresh_warehouse, live_env, start_sim
from tests.test_ui_backfill import CHROMIUM, CHROMIUM_ARGS

# dagster dev, a live run through a minute's end, a browser and the supervisor's next tick
pytestmark = [pytest.mark.xdist_group("dagster_dev"), pytest.mark.timeout(600)]
TERMINATE = """mutation($id: String!) { terminateRun(runId: $id) { __typename } }"""
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
    )
    log = tmp_path / "dagster-dev.log"
    try:
        with dagster_dev(env, port, log) as dev:
            _supervise(dev, warehouse, home, log)
    finally:
        sim.stop()
        drop(warehouse)


def _supervise(dev: Dev, warehouse, home: Path, log: Path) -> None:
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
    # The asset page shows the minute's numbers (plotted under Plots) and the supervisor
    _in_browser(dev, "/assets/live_trades", "lag_p99_ms", "live_ingest_supervisor")
    # Terminate once a minute has ended with trades in it: its bar must be written by the
    # clean stop even if the lateness has not let it out yet.
    ended_minute = dev.wait(
        "the live run stores trades of an ended minute",
        lambda: [
            minute
            for minute, n in warehouse.query_rows(
                "SELECT max(toStartOfMinute(ts)), count() FROM trades "
                "WHERE ts < toStartOfMinute(now64(3))"
            )
            if n
        ],
        180,
    )[0]
    assert dev.query(TERMINATE, id=run_id)["terminateRun"]["__typename"] == ("TerminateRunSuccess")
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
    _in_browser(dev, f"/runs/{run_id}", "Stopped on request")
    manifests = list((home / "sessions").glob("*/session.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["state"] == "closed" and manifest["footer"]["clean"] is True
    session_id = manifests[0].parent.name
    stored = warehouse.scalar(
        "SELECT count() FROM bars_1m WHERE ts = {t:DateTime64(3, 'UTC')}", {"t": ended_minute}
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


def _in_browser(dev: Dev, path: str, *texts: str) -> None:
    """Open ``path`` of the UI in headless Chromium and wait until every text shows (the page
    is read every 5 s and reloaded every 30 s while the webserver is busy)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(f"{dev.base}{path}")
            for attempt in range(36):
                page.wait_for_timeout(5000)
                shown = page.inner_text("body")
                if all(text in shown for text in texts):
                    return
                if attempt % 6 == 5:
                    page.reload()
            page.screenshot(path=dev.log.with_suffix(".png"))
            raise AssertionError(f"{texts} not shown:\n{shown}\n{tail(dev.log, 40)}")
        finally:
            browser.close()
