"""A ClickHouse slower than the offered rate must not stop the live pipeline from stopping.

Seen at 50,000 msgs/s offered: a 20 s ``quant live`` was still running minutes later. The
processor released a new batch while each insert ran, and ``WarehouseSink.flush`` inserted
until nothing was pending, so it never returned; the ticker awaited that flush, so it never
looked at the run's duration again, and nothing set the stop.

* a flush inserts only the batches released before it began;
* the ticker never awaits an insert: it stops the run at its duration while one hangs.

The warehouse here is a stand-in for its ``insert`` only (what the sink calls), so "slower than
the rate" and "does not answer" are states the test controls, not timings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa

from quant_resources.live.sinks import WarehouseSink
from quant_resources.session_log_thread import SessionLogThread
from quant_resources.session_writer import SessionWriter
from tests.live_helpers import unconnected_pipeline
from tests.test_kernel_bad_input import T0, RecordingSink

ROWS = pa.table({"x": [1, 2, 3]})


class ChasingWarehouse:
    """Each insert releases one more batch in the sink (as the processor does under load
    while an insert runs), up to ``more`` of them."""

    def __init__(self, more: int) -> None:
        self.sink: WarehouseSink | None = None
        self.more = more
        self.inserted: list[str] = []

    def insert(self, table: str, data: pa.Table, *, dedup_token: str | None = None) -> None:
        self.inserted.append(dedup_token)
        if self.more:
            self.more -= 1
            self.sink.tables["trades"].append(ROWS)
            self.sink.release()


def test_a_flush_inserts_only_what_was_released_before_it(tmp_path: Path) -> None:
    warehouse = ChasingWarehouse(more=200)
    sink = WarehouseSink(warehouse, "s")
    warehouse.sink = sink

    async def main() -> None:
        sink.tables["trades"].append(ROWS)
        sink.release()
        await sink.flush()
        assert warehouse.inserted == ["s:trades:1"]  # not the 200 released meanwhile
        assert len(sink.pending) == 1  # the next flush takes it
        await sink.flush()
        assert len(warehouse.inserted) == 2

    asyncio.run(main())


class UnansweredSink(RecordingSink):
    """A sink always due whose flush waits for an answer that does not come."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.answer = asyncio.Event()

    def due(self, force: bool = False) -> bool:
        return True

    async def flush(self) -> None:
        self.flushes += 1
        await self.answer.wait()


def test_the_ticker_stops_the_run_at_its_duration_while_an_insert_hangs(tmp_path: Path) -> None:
    pipeline = unconnected_pipeline(tmp_path, "slow", duration_s=0.5)

    async def main() -> None:
        sink = UnansweredSink()
        pipeline.sinks = {"slow": sink}
        writer = SessionWriter(tmp_path / "log", "s", "binance", ["aggTrade"], ["BTCUSDT"], "t")
        pipeline.log = SessionLogThread(writer, asyncio.get_running_loop())
        ticker = asyncio.create_task(pipeline._tick())
        try:
            # Waits for the state (the stop); without the fix the ticker hangs in the flush.
            await asyncio.wait_for(pipeline.stop.wait(), 60)
        finally:
            ticker.cancel()
            if pipeline._sender is not None:
                pipeline._sender.cancel()
        assert sink.flushes >= 1  # the insert was started, and is still hanging
        pipeline.log.close(T0)

    asyncio.run(main())
    assert pipeline.stop.is_set()
