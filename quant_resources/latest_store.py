"""The latest values per series in Redis: ``quant:v1:latest:{source}:{symbol}:{kind}`` holds the
v1 contract JSON of the newest trade, book ticker, bar or book of that series.

This module reads them (the data service); the live pipeline's sink
(``quant_resources.live.redis_sink``) writes them with the same key function, and the stream of
final bars at ``bars_stream_key``. ``REDIS_URL`` carries the password
(``redis://:password@host:6379/0``); errors name the server with the password redacted.
"""

from __future__ import annotations

import redis

from quant_resources.redis_pipelined import PipelinedRedis, RedisPipelinedError, command
from quant_resources.settings import redact_url

KINDS = ("trade", "book_ticker", "bar", "book")
# Bounded, so a dead server costs a request a fraction of a second before the warehouse answers.
SOCKET_TIMEOUT_S = 0.5


class LatestStoreError(RuntimeError):
    """Redis could not be reached or answered an error; the message never carries a secret."""


def latest_key(source: str, symbol: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    return f"quant:v1:latest:{source}:{symbol.upper()}:{kind}"


class LatestStore:
    """Reads the latest-value keys, one round trip per series: ``get`` from threads (redis-py),
    ``get_async`` from an event loop (pipelined, never blocking the loop)."""

    def __init__(self, url: str) -> None:
        self.display_url = redact_url(url)
        self.client = redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
        )
        self.pipelined = PipelinedRedis(url, SOCKET_TIMEOUT_S)

    async def get_async(self, source: str, symbol: str) -> dict[str, bytes | None]:
        """As ``get``, awaited: one raw MGET on the loop's shared connection."""
        keys = [latest_key(source, symbol, kind) for kind in KINDS]
        try:
            values = await self.pipelined.execute(command("MGET", *keys))
        except RedisPipelinedError as exc:
            raise LatestStoreError(str(exc)) from None
        return dict(zip(KINDS, values, strict=True))

    def get(self, source: str, symbol: str) -> dict[str, bytes | None]:
        """kind -> the stored JSON (or None) for every kind of one series."""
        keys = [latest_key(source, symbol, kind) for kind in KINDS]
        try:
            values = self.client.mget(keys)
        except redis.RedisError as exc:
            raise LatestStoreError(f"redis at {self.display_url}: {type(exc).__name__}") from None
        return dict(zip(KINDS, values, strict=True))

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise LatestStoreError(
                f"redis at {self.display_url}: {type(exc).__name__}: {exc}"
            ) from None

    def close(self) -> None:
        self.client.close()
        self.pipelined.close()


def bars_stream_key(source: str, interval: str) -> str:
    """The Redis Stream of final bars of one source and interval (every version, in the order
    the live pipeline wrote them; entry fields ``symbol``, ``version``, ``bar`` = contract JSON)."""
    return f"quant:v1:stream:{source}:bar:{interval}"
