"""The live pipeline's one-line status on a terminal: ``quant live`` and the demo's live step."""

from __future__ import annotations

import math
import sys
import time
from collections import deque

from quant_core.telemetry import percentile


class StatusLine:
    """One refreshed terminal line: elapsed (and remaining), trades and their rate over the last
    few seconds, lag of this minute, connection state, open gaps. Not on a terminal (output
    captured or piped), a whole line every ``every_s`` seconds instead of carriage returns."""

    def __init__(
        self,
        duration_s: float | None,
        window_s: float = 5.0,
        interactive: bool = True,
        every_s: float = 10.0,
    ) -> None:
        self.duration_s = duration_s
        self.window_s = window_s
        self.interactive = interactive
        self.every_s = every_s
        self.started = time.monotonic()
        self.samples: deque[tuple[float, int]] = deque()
        self._printed = self.started

    def __call__(self, summary, pipeline) -> None:
        text = self.render(summary, pipeline)
        if self.interactive:
            sys.stderr.write("\r" + text + "\x1b[K")
        elif time.monotonic() - self._printed >= self.every_s:
            self._printed = time.monotonic()
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def end(self) -> None:
        """Leave the refreshed line in place: what is printed next starts on a new line."""
        if self.interactive:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def render(self, summary, pipeline) -> str:
        now = time.monotonic()
        self.samples.append((now, summary.trades))
        while self.samples and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        elapsed = now - self.started
        clock = duration_text(elapsed)
        if self.duration_s:
            clock += f" (-{duration_text(math.ceil(max(0.0, self.duration_s - elapsed)))})"
        lags = pipeline.lags_ms()
        lag = f"lag p50 {percentile(lags, 50):.0f} ms" if lags else "lag -"
        state = "connected" if pipeline.client.settled(0.0) else "reconnecting"
        gaps = len(pipeline.kernel.open_gaps())
        return (
            f"{clock}  {summary.trades:,} trades ({rate:,.0f}/s)  {summary.bars:,} bars  {lag}  "
            f"{state}  gaps open {gaps}, repaired trades {summary.trades_repaired:,}"
        )


def duration_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"
