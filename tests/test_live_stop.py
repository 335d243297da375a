"""A clean stop while background gap repairs are still paging through REST.

Under overload the repairs never run out of work: each page they fetch is queued for the
processor, so a stop that waited for the queue to run dry before ending them waited for every
gap to be repaired (minutes at the REST weight limit). The stop ends them first; the catch-up
of the clean stop takes over their gaps within its own budget."""

from __future__ import annotations

import asyncio

from quant_resources.live.pipeline import LiveConfig, LivePipeline
from tests.live_helpers import drop, fresh_warehouse, start_sim

PAGE = 1000  # trades per REST repair page (quant_resources.live.pipeline.REPAIR_PAGE)


def test_stop_ends_background_repairs_instead_of_waiting_for_them(tmp_path, clickhouse_url):
    warehouse = fresh_warehouse(clickhouse_url)
    sim = start_sim(tmp_path / "sim", "--symbols", "btcusdt", "--rate", "4000", "--seed", "11")

    def last_id() -> int:
        return sim.request("/api/v3/aggTrades?symbol=BTCUSDT&limit=1")[0]["a"]

    try:
        # A previous run stored the simulator's first trade, so this one resumes from it: the
        # first live trade opens a gap as deep as the simulator's history, tens of pages:
        # wait until it has published at least 30 pages' worth.
        # (Polled twice a second: each poll spends the simulator's REST weight.)
        first = sim.child.wait_for(
            "a first trade",
            lambda: sim.request("/api/v3/aggTrades?symbol=BTCUSDT&fromId=0&limit=1"),
            60,
            every=0.5,
        )[0]
        sim.child.wait_for(
            "30 pages of trade history", lambda: last_id() - first["a"] > 30 * PAGE, 120, every=0.5
        )
        warehouse.command(
            "INSERT INTO trades (source, symbol, stream, trade_id, first_trade_id, "
            "last_trade_id, price, qty, is_buyer_maker, ts, ts_init, session_id) "
            "VALUES ('binance', 'BTCUSDT', 'aggTrade', {a:UInt64}, "
            "{f:UInt64}, {l:UInt64}, {p:String}, {q:String}, {m:Bool}, "
            "fromUnixTimestamp64Milli({t:Int64}), now64(9), 'earlier')",
            {
                "a": first["a"],
                "f": first["f"],
                "l": first["l"],
                "p": first["p"],
                "q": first["q"],
                "m": first["m"],
                "t": first["T"],
            },
        )
        history = last_id() - first["a"]

        config = LiveConfig(
            symbols=["BTCUSDT"],
            streams=["aggTrade"],
            ws_url=f"ws://{sim.url}",
            rest_url=f"http://{sim.url}",
            session_root=tmp_path / "sessions",
            stop_budget_s=0.2,
        )
        pipeline = LivePipeline(config, warehouse)
        # Overload has used up the REST weight: pages come at its refill rate (a page of
        # aggTrades every 0.2 s), each queued for the processor before the next is fetched.
        pipeline.rest.bucket.tokens = 0.0
        summary, at_stop = asyncio.run(_stop_during_repair(pipeline))
    finally:
        sim.stop()
        drop(warehouse)
    assert at_stop >= 2
    # After the stop: the page in flight, and what the catch-up fetched in its 0.2 s budget.
    # Waiting for the repair would have fetched every remaining page of the history.
    assert summary.rest_requests < at_stop + 10, (summary.rest_requests, history // PAGE)
    assert summary.stop_exchange_ms is not None and summary.gaps >= 1


async def _stop_during_repair(pipeline: LivePipeline):
    run = asyncio.create_task(pipeline.run())
    for _ in range(600):  # the repair is under way once it has fetched two pages
        if pipeline.summary.rest_requests >= 2 or run.done():
            break
        await asyncio.sleep(0.05)
    at_stop = pipeline.summary.rest_requests
    pipeline.request_stop()
    return await asyncio.wait_for(run, 300), at_stop
