"""A warehouse outage in the middle of ``quant live``: one line when it starts and one when it
ends (not one warning per failed insert); past ``--max-outage`` a clean stop with one clear
message, exit 1 and a closed session log."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from quant_dev.processes import Child, warehouse_endpoint
from quant_resources.live.outage import SINK_LOGGER, OutageWatch
from tests.live_helpers import QUANT, STARTED, Live, fresh_warehouse, live_env, start_sim

pytestmark = pytest.mark.timeout(300)


@dataclass
class _Sink:
    failures: int = 0
    pending: list = field(default_factory=list)
    rows_written: dict = field(default_factory=lambda: {"trades": 0})


def _fail(sink: _Sink) -> None:
    """What the sink does on a failed insert: count it and log it (filtered by the watch)."""
    sink.failures += 1
    sink.pending.append("batch")
    logging.getLogger(SINK_LOGGER).warning(
        "warehouse insert of %s failed (%s); %d batches buffered", "trades", "refused", 1
    )


def test_one_line_per_outage_and_one_when_it_ends(caplog) -> None:
    caplog.set_level(logging.INFO)
    sink = _Sink()
    stops = []
    pipeline = SimpleNamespace(sinks={"warehouse": sink}, request_stop=lambda: stops.append(1))
    summary = SimpleNamespace(session_dir="/sessions/s1")
    watch = OutageWatch("http://127.0.0.1:1/quant", max_outage_s=None)
    try:
        for _ in range(2):
            for _attempt in range(20):
                _fail(sink)
                watch(summary, pipeline)
            sink.pending.clear()
            sink.rows_written["trades"] += 10
            watch(summary, pipeline)
    finally:
        watch.close()
    lines = [r.getMessage() for r in caplog.records]
    assert not [line for line in lines if line.startswith("warehouse insert of")], lines
    assert [line.split(" (")[0] for line in lines if "not taking" in line] == [
        "warehouse http://127.0.0.1:1/quant is not taking inserts"
    ] * 2
    assert len([line for line in lines if "takes inserts again" in line]) == 2
    assert watch.outages == 2 and watch.gave_up is None and not stops


# --dagster: the same session as a run of live_ingest_job in QUANT_HOME's instance, as when a
# user starts it beside `make dev`; the terminal must read the same (no Dagster stack trace).
@pytest.mark.parametrize("mode", ["--no-dagster", "--dagster"])
def test_outage_past_the_bound_stops_quant_live_with_one_message(tmp_path, mode) -> None:
    # The simulator starts while the endpoint does (each is a process that imports for seconds).
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(
            start_sim, tmp_path / "sim", "--symbols", "btcusdt", "--rate", "100", "--seed", "5"
        )
        endpoint = warehouse_endpoint(tmp_path / "warehouse")
        url = endpoint.__enter__()
        sim = starting.result()
    try:
        warehouse = fresh_warehouse(url)
        env = live_env(sim, warehouse, tmp_path / "home")
        args = [*QUANT, "live", "--symbols", "btcusdt", "--duration", "120", "--max-outage", "3"]
        args.append(mode)
        out, err = tmp_path / "live.stdout", tmp_path / "live.stderr"
        child = Child("quant live", args, None, environ=env, log=out, stderr_log=err)
        STARTED.append(child)
        live = Live(child, out, err)
        deadline = time.monotonic() + 90
        while not warehouse.scalar("SELECT count() FROM trades"):
            assert time.monotonic() < deadline and live.proc.poll() is None, live.explain()
            time.sleep(0.2)
    finally:
        endpoint.__exit__(None, None, None)  # the outage: the endpoint is gone for good
    try:
        rc = live.wait(150)
    finally:
        sim.stop()
    text = err.read_text()
    assert rc == 1, live.explain()
    assert text.count("is not taking inserts") == 1, text
    assert "warehouse insert of" not in text and "Traceback" not in text, text
    assert "Stack Trace" not in text and "dagster - " not in text, text
    assert text.count("could not write to the warehouse") == 1, text
    manifests = list((tmp_path / "home" / "sessions").glob("*/session.json"))
    assert len(manifests) == 1
    assert json.loads(manifests[0].read_text())["state"] == "closed"
