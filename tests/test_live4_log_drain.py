"""Under sustained load the session log's thread still fsyncs: each drain writes only what was
handed over before it began, then fsyncs, so records keep becoming durable (and kernel outputs
keep reaching the sinks) while the event loop hands more over faster than the thread writes.

Before the fix the thread drained until the queue was empty: at 50,000 msgs/s offered the loop
kept it non-empty, nothing was fsynced, nothing reached ClickHouse, and the stop waited for the
whole backlog. "Faster than the thread" is made deterministic here: every record the thread
writes hands the next one over (from the writer, while the thread is inside its drain)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from quant_resources.session_log_thread import SessionLogThread
from quant_resources.session_writer import SessionWriter
from tests.test_kernel_bad_input import T0, agg

FOLLOWERS = 300  # records handed over while the thread writes


class ChasedWriter(SessionWriter):
    """A session writer that, on each ``append_many``, hands the next record over to the
    log's thread (as the loop does under load) and logs its fsyncs in ``synced_at``."""

    log: SessionLogThread | None = None

    def __init__(self, *args, **kwargs) -> None:
        self.synced_at: list[int] = []
        self.follow = FOLLOWERS
        super().__init__(*args, **kwargs)
        self.synced_at.clear()  # the opening fsync is not one of the test's

    def append_many(self, kind, records) -> None:
        super().append_many(kind, records)
        if self.log is not None and self.follow:
            self.follow -= 1
            self.log.append_many("ws", [(1, 2_000 + self.follow, agg(self.follow, T0))])

    def sync(self) -> None:
        super().sync()
        self.synced_at.append(self.records)


def test_a_drain_fsyncs_what_it_found_while_more_keeps_coming(tmp_path: Path) -> None:
    writer = ChasedWriter(tmp_path, "s", "binance", ["aggTrade"], ["BTCUSDT"], "t", start_ns=1)

    async def main() -> None:
        log = SessionLogThread(writer, asyncio.get_running_loop())
        writer.log = log
        log.append_many("ws", [(1, 1_000, agg(FOLLOWERS + 1, T0))])
        await asyncio.wait_for(log.durable(1), 60)
        first_fsync = writer.synced_at[0]
        # The first record was durable long before the records chasing it were all written.
        assert first_fsync < FOLLOWERS / 2, (first_fsync, writer.synced_at[:5])
        while writer.follow:  # the thread hands the followers over itself
            await asyncio.wait_for(log.durable(), 60)
        await asyncio.wait_for(log.durable(), 60)
        assert log.backlog == 0 and log.durable_records == FOLLOWERS + 1
        assert len(writer.synced_at) > 2
        log.close(T0)

    asyncio.run(main())
