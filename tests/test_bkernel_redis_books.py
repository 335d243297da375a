"""The newest book snapshot per symbol reaches Redis through the sink protocol (issue 17): the
Redis sink takes it from the kernel's output like trades and bars, sends nothing before the
write-ahead gate released it, and ``/v1/latest``'s reader (``quant_api.latest.from_redis``)
returns it as the ``book`` of each symbol. Real ``redis-server`` (password required); the live
driver is fed the mixed depth stream of ``test_bkernel_books_drivers``."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant_api import latest
from quant_dev.serving import RedisServer
from quant_resources.latest_store import LatestStore
from quant_resources.live.redis_sink import RedisSink, book_contract
from tests.test_bkernel_books_drivers import SYMBOLS, book_parts, run_live


@pytest.fixture
def private_redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_last_book_snapshot_per_symbol_is_in_redis(tmp_path: Path, private_redis) -> None:
    store = LatestStore(private_redis.url)
    sink = RedisSink(private_redis.url)
    seen: dict[str, object] = {}

    async def at_end(pipeline) -> None:
        assert sink.buffered() > 0  # staged from the kernel's output ...
        await sink.flush()
        seen["before_release"] = {s: latest.from_redis(store, "binance", s) for s in SYMBOLS}
        pipeline._release(force=True)  # ... sent once the write-ahead gate released it
        assert await sink.close(30)

    outputs, _, _ = run_live(tmp_path, {"redis": sink}, at_end)
    assert seen["before_release"] == {s: {} for s in SYMBOLS}

    snapshots = book_parts(outputs)["snapshots"]
    for symbol in SYMBOLS:
        newest = max(
            (s for s in snapshots if s.symbol == symbol), key=lambda s: (s.ts_event, s.update_id)
        )
        cached = latest.from_redis(store, "binance", symbol)
        assert cached["book"] == book_contract(newest, "binance"), symbol
        assert cached["book"].update_id == newest.update_id
        assert cached["book"].synced_from == newest.synced_from
        assert (cached["book"].bids_complete, cached["book"].asks_complete) == (
            newest.bids_known,
            newest.asks_known,
        )
        assert [lv.price for lv in cached["book"].bids][:1] == [
            book_contract(newest, "binance").bids[0].price
        ]
    assert sink.stats()["failures"] == 0 and sink.stats()["pending"] == 0
