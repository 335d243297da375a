"""`quant live` in a terminal: one clear line when the warehouse cannot take rows, a status line
with elapsed time, rate, lag and connection state, a readable summary, and --help naming the
environment it reads."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

from quant_cli.live import StatusLine, describe


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "quant_cli.main", "live", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unreachable_warehouse_is_one_line_without_the_password(tmp_path) -> None:
    done = _run(
        "--duration",
        "5",
        CLICKHOUSE_URL="http://quant:hunter2secret@127.0.0.1:9/quant",
        QUANT_HOME=str(tmp_path),
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the warehouse"), lines
    assert "Traceback" not in done.stderr and "hunter2secret" not in done.stderr + done.stdout
    assert not (tmp_path / "sessions").exists()  # nothing started, nothing half-written


def test_warehouse_without_tables_is_named_with_the_fix(tmp_path) -> None:
    done = _run("--duration", "5", QUANT_HOME=str(tmp_path), CLICKHOUSE_URL="")
    assert done.returncode == 1
    assert "table 'trades' does not exist" in done.stderr
    assert "clickhouse_schema" in done.stderr and "Traceback" not in done.stderr


def test_help_lists_the_environment() -> None:
    done = _run("--help")
    assert done.returncode == 0
    names = ("BINANCE_WS_URL", "BINANCE_REST_URL", "CLICKHOUSE_URL", "QUANT_HOME", "NATS_URL")
    for name in (*names, "REDIS_URL"):
        assert name in done.stdout, name


@dataclass
class _Summary:
    trades: int = 0
    bars: int = 0
    trades_repaired: int = 0


@dataclass
class _Pipeline:
    settled: bool = True
    lags: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lags_ms = lambda: self.lags
        self.client = SimpleNamespace(settled=lambda seconds: self.settled)
        self.kernel = SimpleNamespace(open_gaps=lambda: [object()])


def test_status_line_shows_clock_rate_lag_and_state() -> None:
    line = StatusLine(duration_s=60.0)
    summary, pipeline = _Summary(), _Pipeline(lags=[10.0, 20.0, 30.0])
    line.started -= 5.0
    line.render(summary, pipeline)
    line.samples[0] = (line.samples[0][0] - 2.0, 0)  # two seconds ago: no trades yet
    summary.trades = 1000
    text = line.render(summary, pipeline)
    assert text.startswith("0:05 (-0:55)")
    assert "1,000 trades" in text and "/s)" in text and "(0/s)" not in text
    assert "lag p50 20 ms" in text and "connected" in text and "gaps open 1" in text
    pipeline.settled = False
    assert "reconnecting" in line.render(summary, pipeline)


def test_summary_is_readable_and_names_the_warehouse(monkeypatch) -> None:
    monkeypatch.setenv("CLICKHOUSE_URL", "http://quant:hunter2secret@127.0.0.1:8123/quant")
    summary = SimpleNamespace(
        session_id="live-1",
        seconds=12.5,
        frames=100,
        trades=90,
        quotes=10,
        bars=3,
        gaps=1,
        trades_repaired=7,
        rest_requests=2,
        duplicates=4,
        reconnects=1,
        handovers=0,
        drops=0,
        rejects={"malformed_json": 2, "bad_number": 0},
        rows_written={"trades": 90, "quotes": 10, "bars_1m": 3},
        sinks={"redis": {"written": 12, "stream_written": 3, "failures": 2, "outages": 1}},
        dropped_late=5,
        session_dir="/x/live-1",
        final_digest="ab" * 32,
    )
    text = describe(summary)
    assert "redis       12 latest values, 3 final bars streamed, 2 failed writes" in text
    assert "5 trades too late for their bars" in text  # stored, never silently
    assert "{" not in text  # no dict reprs
    assert "malformed_json 2" in text and "bad_number" not in text
    assert "bars_1m 3, quotes 10, trades 90 to http://quant:***@127.0.0.1:8123/quant" in text
    assert "hunter2secret" not in text
