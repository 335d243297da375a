"""In a running ``dagster dev`` (webserver and daemon, started by ``scripts/dev``): the
``live_ingest_supervisor`` keeps exactly one live run going; terminating it the way the UI's
Terminate button does (the ``terminateRun`` GraphQL mutation) stops it cleanly, with its
session closed and its bars written; the supervisor starts the next run; and the
``new_session_logs`` sensor verifies the closed session against the warehouse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quant_dev.processes import free_port, tail
from tests.dagster_dev import Dev, dagster_dev
from tests.live_helpers import drop, fresh_warehouse, live_env, start_sim

pytestmark = pytest.mark.xdist_group("dagster_dev")
TERMINATE = """mutation($id: String!) { terminateRun(runId: $id) { __typename } }"""
ACTIVE = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}


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
    # The supervisor starts the next one; never two at once.
    runs = dev.wait(
        "the supervisor starts the next run",
        lambda: [
            r for r in dev.runs("live_ingest_job")
            if r["status"] in ACTIVE and r["runId"] != run_id
        ],
        180,
    )  # fmt: skip
    assert len([r for r in dev.runs("live_ingest_job") if r["status"] in ACTIVE]) == 1
    assert runs
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
