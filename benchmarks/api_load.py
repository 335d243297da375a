"""Open-loop load from a process of its own: GET one URL at a fixed rate, print the latencies.

    python -m benchmarks.api_load URL RATE SECONDS   (bearer token in QUANT_BENCH_TOKEN)
    python -m benchmarks.api_load redis RATE SECONDS  (MGET of the keys in QUANT_BENCH_KEYS
                                                       on REDIS_URL: the peer)

Request i is due at start + i / RATE and is sent then, whether or not earlier answers have
come back: an answer still outstanding holds its keep-alive connection and the next request
takes another one (opened on demand, then kept, up to CONNECTIONS clients; past them a request
waits for a free one, its wait counted), as independent clients would. Its latency is
counted from when it was due, not from when it was sent, so a slow answer that delays the next
ones is charged to all of them (no coordinated omission). Both targets go through the same
scheduler on an asyncio loop (uvloop), each request a few microseconds of the generator's CPU:
a generator that cannot keep the rate would itself show as latency. Its own lag (how late it
sent, worst case) goes to standard error, so a slow generator is told apart from a slow
server.

Prints one JSON list of latencies in microseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

WARM_UP = 50
CONNECTIONS = 16  # clients at most; more would only add the server's accept and buffer costs


class HttpTarget:
    """HTTP/1.1 GETs of one URL over keep-alive connections, read to the end of the body.
    The request is written by hand: the generator's own cost must stay far below the rate's
    period, which a general client (httpx: about a millisecond a request) does not."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: application/json\r\n\r\n"
        ).encode()
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.opened = 0

    async def call(self) -> None:
        if self.idle.empty() and self.opened < CONNECTIONS:
            self.opened += 1
            reader, writer = await asyncio.open_connection(self.host, self.port)
        else:
            reader, writer = await self.idle.get()
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head[9:12]
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await reader.readexactly(length)
        if status != b"200":
            raise RuntimeError(f"HTTP {status.decode()}: {body[:300]!r}")
        self.idle.put_nowait((reader, writer))


class RedisTarget:
    """MGET of the keys through redis-py's asyncio client (its pool: one connection per
    request in flight, kept, up to CONNECTIONS; past them a request waits for one)."""

    def __init__(self, url: str, keys: list[str]) -> None:
        import redis.asyncio

        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=CONNECTIONS, timeout=None
        )
        self.client = redis.asyncio.Redis(connection_pool=pool)
        self.keys = keys

    async def call(self) -> None:
        values = await self.client.mget(self.keys)
        if any(v is None for v in values):
            raise RuntimeError(f"a key is missing: {self.keys}")


async def run(call: Callable[[], Awaitable[None]], rate: float, seconds: float) -> list[float]:
    for _ in range(WARM_UP):  # open a connection, warm the server's code paths
        await call()
    total = int(rate * seconds)
    latencies: list[float] = []
    lag = 0.0
    tasks: list[asyncio.Task] = []

    async def one(due: float) -> None:
        await call()
        latencies.append((time.perf_counter() - due) * 1e6)

    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        # The loop's timers wake up to a millisecond early: sleep again until due.
        while (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        lag = max(lag, time.perf_counter() - due)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)  # the first failure fails the run
    print(f"generator: worst send lag {lag * 1e6:,.0f} µs", file=sys.stderr)
    return latencies


def main() -> None:
    import uvloop

    target, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])

    async def go() -> list[float]:
        if target == "redis":
            client = RedisTarget(os.environ["REDIS_URL"], os.environ["QUANT_BENCH_KEYS"].split(","))
        else:
            client = HttpTarget(target, os.environ["QUANT_BENCH_TOKEN"])
        latencies = await run(client.call, rate, seconds)
        if isinstance(client, HttpTarget):
            print(f"generator: {client.opened} connections", file=sys.stderr)
        else:
            await client.client.aclose()
        return latencies

    # Written and flushed before the interpreter shuts down: a 64 KiB pipe buffer once held
    # the only part of the list that reached the bench (the rest lost at exit).
    sys.stdout.write(json.dumps(uvloop.run(go())) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
