"""The session log's own thread (``quant_resources.session_log_thread``): it writes the same
bytes as the writer called directly, in call order; ``durable`` returns only after an fsync
covering the records; and the live pipeline stages a kernel output in its sinks only once the
records it came from are fsynced (write-ahead with the fsync off the event loop). The fsync is
held on an event, so "not yet" is a state the test controls, not a timing."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from quant_core.sessionlog.reader import SessionReader
from quant_resources.binance.stream import RawFrame
from quant_resources.session_log_thread import SessionLogThread
from quant_resources.session_writer import SessionWriter
from tests.live_helpers import unconnected_pipeline
from tests.test_kernel_bad_input import T0, RecordingSink, agg


class HeldWriter(SessionWriter):
    """A session writer whose fsyncs wait for ``release`` (the first one, at the segment's
    opening, does not) and are logged in ``events``."""

    def __init__(self, *args, events: list, **kwargs) -> None:
        self.events = events
        self.gate = threading.Event()
        self.gate.set()
        super().__init__(*args, **kwargs)
        self.gate.clear()
        events.clear()  # the opening fsync is not one of the test's

    def sync(self) -> None:
        self.gate.wait()
        super().sync()
        self.events.append(("fsync", self.records))


def writer(root: Path, events: list | None = None) -> SessionWriter:
    args = (root, "s", "binance", ["aggTrade"], ["BTCUSDT"], "t")
    if events is None:
        return SessionWriter(*args, start_ns=1)  # the same header bytes every time
    return HeldWriter(*args, events=events, start_ns=1)


def records(n: int, start: int = 0) -> list[tuple[int, int, bytes]]:
    return [(1, 1_000 + i, agg(i, T0 + i)) for i in range(start, start + n)]


def test_the_thread_writes_the_same_bytes_in_call_order(tmp_path: Path) -> None:
    direct = writer(tmp_path / "direct")
    direct.append("conn", 0, 999, b"", {"event": "seed"})
    direct.append_many("ws", records(2500))
    direct.append("rest", 0, 5_000, b"[]", {"path": "/api/v3/aggTrades"})
    direct.append_many("ws", records(10, 2500))
    expected = direct.close(T0).final_digest

    async def main() -> str:
        log = SessionLogThread(writer(tmp_path / "threaded"), asyncio.get_running_loop())
        log.append("conn", 0, 999, b"", {"event": "seed"})
        log.append_many("ws", records(2500))
        log.append("rest", 0, 5_000, b"[]", {"path": "/api/v3/aggTrades"})
        log.append_many("ws", records(10, 2500))
        await log.durable()
        assert log.durable_ticket == log.ticket == 4
        return log.close(T0).final_digest

    assert asyncio.run(main()) == expected
    info = SessionReader(tmp_path / "threaded" / "s").verify()
    assert info.records > 2512 and info.final_digest == expected


def test_durable_returns_only_after_the_fsync(tmp_path: Path) -> None:
    events: list = []

    async def main() -> None:
        held = writer(tmp_path, events)
        log = SessionLogThread(held, asyncio.get_running_loop())
        log.append_many("ws", records(5))
        waiting = asyncio.ensure_future(log.durable())
        # Whatever the loop does meanwhile, the fsync is held: nothing is durable.
        for _ in range(50):
            await asyncio.sleep(0)
        assert not waiting.done() and log.durable_ticket == 0
        held.gate.set()
        await waiting
        events.append(("durable", log.durable_ticket))
        log.close(T0)

    asyncio.run(main())
    assert events[0][0] == "fsync" and events[0][1] >= 5
    assert events.index(("durable", 1)) > 0


def test_the_pipeline_stages_output_only_after_its_records_are_fsynced(tmp_path: Path) -> None:
    pipeline = unconnected_pipeline(tmp_path, "gate")
    sink = RecordingSink()
    pipeline.sinks = {"record": sink}
    events: list = []

    async def main() -> None:
        held = writer(tmp_path / "log", events)
        pipeline.log = SessionLogThread(held, asyncio.get_running_loop(), pipeline._on_durable)
        pipeline._on_frames([RawFrame(1_000 + i, 1, agg(i + 1, T0 + i)) for i in range(20)])
        for _ in range(50):
            await asyncio.sleep(0)
            pipeline._release(force=True)  # the gate is asked, again and again
        assert sink.outputs == [] and pipeline.summary.trades == 20  # processed, not staged
        held.gate.set()
        await pipeline.log.durable()
        await asyncio.sleep(0)  # the thread's answer runs on the loop: on_durable stages
        assert sum(len(out.trades) for out in sink.outputs) == 20
        await pipeline._stop_repairs()
        pipeline.log.close(T0)

    asyncio.run(main())
