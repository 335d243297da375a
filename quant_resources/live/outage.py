"""A warehouse outage during a live session, told once: one line when inserts start failing,
one when they succeed again, and (when bounded) a clean stop after too long without a write.

The sink retries every released batch in order and logs each failed attempt; this watch
filters those repeats out of the log and speaks for the whole outage instead. It runs in the
pipeline's status callback (every tick), reading the sink's counters only.
"""

from __future__ import annotations

import logging
import re
import time

log = logging.getLogger(__name__)
SINK_LOGGER = "quant_resources.live.sinks"
FAILED_INSERT = "warehouse insert of"  # how the sink's per-attempt warning starts
GIVE_UP_DRAIN_S = 5.0  # after giving up, the stop does not wait long for the warehouse


class OutageWatch(logging.Filter):
    def __init__(self, where: str, max_outage_s: float | None = None) -> None:
        super().__init__()
        self.where = where
        self.max_outage_s = max_outage_s
        self.since: float | None = None
        self.error = ""
        self.outages = 0
        self.gave_up: str | None = None
        self._failures = 0
        self._written = 0
        logging.getLogger(SINK_LOGGER).addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(FAILED_INSERT):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        self.error = short_reason(str(args[1]) if len(args) > 1 else record.getMessage())
        return False  # said once per outage by ``__call__``

    def __call__(self, summary, pipeline) -> None:
        sink = pipeline.sinks["warehouse"]
        written = sum(sink.rows_written.values())
        if sink.failures > self._failures:
            self._failures = sink.failures
            if self.since is None:
                self.since, self._written = time.monotonic(), written
                self.outages += 1
                log.warning(
                    "warehouse %s is not taking inserts (%s); rows wait in memory and in the "
                    "session log, retrying",
                    self.where,
                    self.error or "insert failed",
                )
        elif self.since is not None and (written > self._written or not sink.pending):
            log.warning(
                "warehouse %s takes inserts again after %.0f s",
                self.where,
                time.monotonic() - self.since,
            )
            self.since = None
        if (
            self.since is not None
            and self.max_outage_s is not None
            and self.gave_up is None
            and time.monotonic() - self.since >= self.max_outage_s
        ):
            self.gave_up = (
                f"could not write to the warehouse {self.where} for {self.max_outage_s:.0f} s "
                f"({self.error or 'insert failed'}); stopped. Every received frame is kept in "
                f"the session log {summary.session_dir}"
            )
            pipeline.sinks["warehouse"].drain_timeout_s = GIVE_UP_DRAIN_S
            pipeline.request_stop()

    def close(self) -> None:
        logging.getLogger(SINK_LOGGER).removeFilter(self)


def short_reason(text: str) -> str:
    """The cause of a failed request in a few words: the OS error when there is one (the
    client's message also carries the whole request URL), else the message's start."""
    found = re.search(r"\[Errno \d+\] [^\"')]+", text)
    if found:
        return found.group(0)
    return text if len(text) <= 200 else text[:200] + "..."
