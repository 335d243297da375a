"""In a running ``dagster dev`` (webserver and daemon, started by ``scripts/dev``): the
``live_ingest_supervisor`` keeps exactly one live run going; terminating it the way the UI's
Terminate button does (the ``terminateRun`` GraphQL mutation) stops it cleanly, with its
session closed and its bars written; the supervisor starts the next run; and the
``new_session_logs`` sensor verifies the closed session against the warehouse."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from quant_cli.children import free_port
from tests.live_helpers import drop, fresh_warehouse, live_env, start_sim, tail

pytestmark = pytest.mark.xdist_group("dagster_dev")
ROOT = Path(__file__).resolve().parents[1]
RUNS = """query($job: String!) { runsOrError(filter: {pipelineName: $job}) {
  ... on Runs { results { runId status tags { key value } } } } }"""
TERMINATE = """mutation($id: String!) { terminateRun(runId: $id) { __typename } }"""
ACTIVE = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}


class Dev:
    def __init__(self, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.log = log

    def query(self, text: str, **variables) -> dict:
        body = json.dumps({"query": text, "variables": variables}).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())["data"]

    def runs(self, job: str) -> list[dict]:
        return self.query(RUNS, job=job)["runsOrError"]["results"]

    def wait(self, what: str, check, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = check()
            except OSError:  # the webserver is still starting
                found = None
            if found:
                return found
            time.sleep(2)
        raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tail(self.log, 60)}")


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
        DAGSTER_PORT=str(port),
    )
    env.pop("DAGSTER_HOME", None)  # scripts/dev keeps the instance in QUANT_HOME/dagster
    log = tmp_path / "dagster-dev.log"
    with log.open("w") as out:
        dev_proc = subprocess.Popen(
            [str(ROOT / "scripts" / "dev")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole below
        )
    dev = Dev(port, log)
    try:
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
        assert dev.query(TERMINATE, id=run_id)["terminateRun"]["__typename"] == (
            "TerminateRunSuccess"
        )
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
                r for r in dev.runs("__ASSET_JOB")
                if {"key": "dagster/partition", "value": session_id} in r["tags"]
                and r["status"] not in ACTIVE
            ],
            240,
        )  # fmt: skip
        assert verified[0]["status"] == "SUCCESS", tail(log, 80)
    finally:
        if dev_proc.poll() is None:
            os.killpg(dev_proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                dev_proc.wait(90)
        # dagster dev's code servers can outlive it until their heartbeat times out.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dev_proc.pid, signal.SIGKILL)
        dev_proc.wait()
        sim.stop()
        drop(warehouse)
