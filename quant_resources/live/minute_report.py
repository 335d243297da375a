"""The live pipeline's numbers per minute of exchange time, for the live assets' metadata.

``tick`` runs in the pipeline's status callback; when the exchange's clock (its latest
reading, or the newest trade's time when ahead) enters a new minute it returns the numbers of
the minute that ended: trades and quotes received in it, their lag p50/p99, and the state at
its end (connections up, reconnects, gaps open and repaired, the last final bar). ``close``
returns the last, partial minute at the stop, with the session's totals. The same dicts are
the Dagster metadata of the run and the demo's report, so both show the same numbers.
"""

from __future__ import annotations

from quant_core.telemetry import percentile

MINUTE_MS = 60_000


def exchange_now_ms(pipeline) -> int | None:
    readings = [pipeline.clock.now_ms, pipeline.kernel.aggregator.watermark_ms]
    known = [ms for ms in readings if ms is not None]
    return max(known) if known else None


def last_final_bar_ms(pipeline) -> int | None:
    """Open time of the newest minute whose bars are final (its end is behind the watermark
    by the lateness)."""
    agg = pipeline.kernel.aggregator
    if agg.watermark_ms is None:
        return None
    return (agg.watermark_ms - agg.lateness_ms) // MINUTE_MS * MINUTE_MS - MINUTE_MS


def totals(summary, pipeline) -> dict[str, int]:
    """The session so far (the connection counters live in the client until the stop)."""
    stats = pipeline.client.stats
    return {
        "trades_total": summary.trades,
        "quotes_total": summary.quotes,
        "bar_versions_total": summary.bars,
        "reconnects": max(summary.reconnects, stats.reconnects),
        "handovers": max(summary.handovers, stats.handovers),
        "duplicates_dropped": summary.duplicates,
        "gaps_opened": summary.gaps,
        "rest_trades": summary.trades_repaired,
        "rest_requests": summary.rest_requests,
        "ids_absent": summary.ids_absent,  # missing ids REST lacks too: lost for good
    }


class MinuteReport:
    def __init__(self) -> None:
        self.minute_ms: int | None = None
        self._counts = (0, 0)
        self._lags: list[float] = []
        self._telemetry = None  # the telemetry minute whose lags were read last, and how far
        self._seen = 0

    def tick(self, summary, pipeline) -> dict | None:
        self._read_lags(pipeline)
        now = exchange_now_ms(pipeline)
        if now is None:
            return None
        minute = now // MINUTE_MS * MINUTE_MS
        if self.minute_ms is None:
            self.minute_ms = minute
        if minute <= self.minute_ms:
            return None
        ended = self._numbers(summary, pipeline)
        self.minute_ms = minute
        return ended

    def close(self, summary, pipeline) -> dict:
        """The last minute, at the stop (connections are closed by then: not reported)."""
        self._read_lags(pipeline)
        if self.minute_ms is None:
            now = exchange_now_ms(pipeline)
            self.minute_ms = (now or 0) // MINUTE_MS * MINUTE_MS
        numbers = self._numbers(summary, pipeline)
        del numbers["connections"]
        return numbers

    def _read_lags(self, pipeline) -> None:
        current = pipeline.telemetry_minute()
        if current is None:
            return
        if self._telemetry is not None and self._telemetry is not current:
            self._lags.extend(self._telemetry.lags_ms[self._seen :])  # the rest of a rolled one
            self._seen = 0
        self._telemetry = current
        self._lags.extend(current.lags_ms[self._seen :])
        self._seen = len(current.lags_ms)

    def _numbers(self, summary, pipeline) -> dict:
        trades, quotes = self._counts
        final = last_final_bar_ms(pipeline)
        open_gaps = len(pipeline.kernel.open_gaps())
        numbers = {
            "exchange_minute_ms": self.minute_ms,
            "trades": summary.trades - trades,
            "quotes": summary.quotes - quotes,
            "lag_p50_ms": round(percentile(self._lags, 50), 1),
            "lag_p99_ms": round(percentile(self._lags, 99), 1),
            "connections": pipeline.client.connected(),
            "gaps_open": open_gaps,
            "gaps_repaired": summary.gaps - open_gaps,
            "last_final_bar_ms": final,
            **totals(summary, pipeline),
        }
        self._counts = (summary.trades, summary.quotes)
        self._lags = []
        return numbers
