"""The event loop's Redis client (``quant_resources.redis_pipelined``) behind
``LatestStore.get_async``: many commands in flight on one connection each get their own reply;
a slow server neither blocks the loop nor pairs a late reply with a later command; errors name
the server and never the password. A real redis-server; a silent TCP server for the slow case."""

from __future__ import annotations

import asyncio
import json

import pytest

from quant_dev.processes import free_port
from quant_dev.serving import RedisServer
from quant_resources.latest_store import KINDS, LatestStore, LatestStoreError, latest_key
from quant_resources.redis_pipelined import PipelinedRedis, RedisPipelinedError, command


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis") / "redis", persist=False)
    server.start()
    yield server.url
    server.stop()


def test_concurrent_reads_share_one_connection_and_get_their_own_values(redis_url) -> None:
    store = LatestStore(redis_url)
    symbols = [f"S{n:03d}" for n in range(300)]
    for symbol in symbols:
        store.client.set(latest_key("binance", symbol, "trade"), json.dumps({"n": symbol}))

    async def run():
        first = await store.get_async("binance", symbols[0])
        connection = store.pipelined.connection
        answers = await asyncio.gather(*(store.get_async("binance", s) for s in symbols))
        return first, connection, answers

    first, connection, answers = asyncio.run(run())
    assert list(first) == list(KINDS)
    for symbol, answer in zip(symbols, answers, strict=True):
        assert json.loads(answer["trade"]) == {"n": symbol}
        assert answer["bar"] is None
    assert store.pipelined.connection is connection  # no other was opened
    store.close()


def test_a_wrong_password_or_no_server_is_an_error_without_the_password(redis_url) -> None:
    wrong = LatestStore(redis_url.replace("redis://:", "redis://:wrong"))
    dead = LatestStore(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    for store in (wrong, dead):
        with pytest.raises(LatestStoreError, match="redis at") as caught:
            asyncio.run(store.get_async("binance", "BTCUSDT"))
        assert "wrong" not in str(caught.value) and "hunter2" not in str(caught.value)
        store.close()


def test_a_silent_server_times_out_without_blocking_the_loop(redis_url) -> None:
    """While one command waits on a server that never answers, another client on the same
    loop is answered; the silent connection is dropped when the wait ends, and the next
    command connects anew (a late reply is never paired with a later command)."""
    connections = []

    async def run():
        async def accept(reader, writer):
            connections.append(writer)
            if len(connections) > 1:  # answers from the second connection on
                while await reader.read(1024):
                    writer.write(b"+PONG\r\n")

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        slow = PipelinedRedis(f"redis://127.0.0.1:{port}/0", timeout=0.5)
        fine = LatestStore(redis_url)
        waiting = asyncio.create_task(slow.execute(command("PING")))
        answered = await fine.get_async("binance", "BTCUSDT")
        still_waiting = not waiting.done()
        with pytest.raises(RedisPipelinedError, match="TimeoutError"):
            await waiting
        again = await slow.execute(command("PING"))
        fine.close()
        slow.close()
        server.close()
        return answered, still_waiting, again

    answered, still_waiting, again = asyncio.run(run())
    assert set(answered) == set(KINDS)
    assert still_waiting
    assert again == b"PONG" and len(connections) == 2
