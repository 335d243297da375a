"""The live run's numbers per minute of exchange time (what live_trades/live_bars_1m record)."""

from __future__ import annotations

from types import SimpleNamespace

from quant_core.telemetry import MinuteTelemetry
from quant_resources.live.minute_report import MinuteReport

T0 = 1_800_000_000_000 // 60_000 * 60_000  # a minute's start, exchange time


def _pipeline() -> SimpleNamespace:
    """What the report reads of a ``LivePipeline``: its clock, kernel, telemetry and client."""
    pipeline = SimpleNamespace(
        clock=SimpleNamespace(now_ms=None),
        kernel=SimpleNamespace(
            aggregator=SimpleNamespace(watermark_ms=None, lateness_ms=2000),
            open_gaps=lambda: [object()],
        ),
        telemetry=SimpleNamespace(current=MinuteTelemetry(0)),
        client=SimpleNamespace(
            stats=SimpleNamespace(reconnects=1, handovers=0), connected=lambda: 2
        ),
    )
    pipeline.telemetry_minute = lambda: pipeline.telemetry.current
    return pipeline


def _summary(**counts) -> SimpleNamespace:
    base = dict(
        trades=0, quotes=0, bars=0, reconnects=0, handovers=0, duplicates=0, gaps=0,
        trades_repaired=0, rest_requests=0, ids_absent=0,
    )  # fmt: skip
    return SimpleNamespace(**{**base, **counts})


def test_each_exchange_minute_reports_its_own_counts_and_lags() -> None:
    report, pipeline = MinuteReport(), _pipeline()
    pipeline.clock.now_ms = T0 + 5_000
    assert report.tick(_summary(trades=10, quotes=4), pipeline) is None  # the first minute opens
    pipeline.telemetry.current.lags_ms.extend([5.0, 7.0, 100.0])
    pipeline.kernel.aggregator.watermark_ms = T0 + 59_000
    assert report.tick(_summary(trades=70, quotes=30), pipeline) is None  # same minute
    pipeline.telemetry.current.lags_ms.append(9.0)  # read before the telemetry minute rolls
    pipeline.telemetry.current = MinuteTelemetry(1)
    pipeline.clock.now_ms = T0 + 61_000
    first = report.tick(_summary(trades=100, quotes=50, gaps=3, ids_absent=2), pipeline)
    assert first["exchange_minute_ms"] == T0
    assert (first["trades"], first["quotes"]) == (100, 50)  # the session began in it
    assert (first["lag_p50_ms"], first["lag_p99_ms"]) == (7.0, 100.0)
    assert (first["connections"], first["reconnects"], first["gaps_open"]) == (2, 1, 1)
    assert first["gaps_repaired"] == 2 and first["trades_total"] == 100
    assert first["ids_absent"] == 2  # lost for good: REST lacks them too
    assert first["last_final_bar_ms"] == T0 - 60_000  # T0's bar waits for the lateness
    last = report.close(_summary(trades=130, quotes=50, gaps=3), pipeline)
    assert (last["exchange_minute_ms"], last["trades"], last["lag_p99_ms"]) == (T0 + 60_000, 30, 0)
