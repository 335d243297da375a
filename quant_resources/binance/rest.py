"""Binance REST for gap repair: aggTrades/historicalTrades from an id, klines for checks.

Requests are weight-limited on our side (a token bucket per minute) and retried by tenacity on
429/418 (honouring Retry-After), 5xx and connection errors; other 4xx fail at once. Each answer
is returned with its raw body so the session log can record it byte for byte.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import orjson
import requests
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from quant_core.depth_decode import DEPTH_PATH
from quant_core.depth_sync import depth_weight
from quant_resources.binance.urls import rest_base

WEIGHTS = {
    "/api/v3/aggTrades": 4,
    "/api/v3/historicalTrades": 25,
    "/api/v3/klines": 2,
    "/api/v3/trades": 25,
    "/api/v3/exchangeInfo": 20,
}


class BinanceRestError(RuntimeError):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return True
    return isinstance(exc, BinanceRestError) and (
        exc.status in (418, 429) or (exc.status or 0) >= 500
    )


def _wait(retry_state) -> float:
    exc = retry_state.outcome.exception()
    if isinstance(exc, BinanceRestError) and exc.retry_after is not None:
        return exc.retry_after
    return wait_exponential_jitter(initial=0.2, max=10)(retry_state)


class _WeightBucket:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.tokens = float(per_minute)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self, weight: int, deadline: float | None, stopping: threading.Event) -> None:
        """Wait for ``weight``; a request with a deadline it cannot make, or one without a
        deadline once ``stopping`` is set (a background repair at shutdown), is refused
        rather than left queueing behind the limit."""
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(
                    self.per_minute, self.tokens + (now - self.stamp) * self.per_minute / 60
                )
                self.stamp = now
                if self.tokens >= weight:
                    self.tokens -= weight
                    return
                wait = (weight - self.tokens) * 60 / self.per_minute
            if deadline is None and stopping.is_set():
                raise BinanceRestError("request abandoned: the pipeline is stopping")
            if deadline is not None and time.monotonic() + wait > deadline:
                raise BinanceRestError("no request weight left before the deadline")
            if deadline is None:
                stopping.wait(wait)  # a sleep that a stop cuts short
            else:
                time.sleep(wait)


@dataclass
class RestAnswer:
    path: str
    params: dict
    body: bytes

    def json(self):
        return orjson.loads(self.body)


class BinanceRest:
    def __init__(
        self, base_url: str | None = None, weight_per_minute: int = 1200, timeout: float = 10
    ):
        self.base_url = base_url or rest_base()
        self.bucket = _WeightBucket(weight_per_minute)
        self.stopping = threading.Event()  # set: requests without a deadline are refused
        self.session = requests.Session()
        self.timeout = timeout
        self.requests = 0

    @retry(
        retry=retry_if_exception(_retryable), wait=_wait, stop=stop_after_attempt(8), reraise=True
    )
    def get(self, path: str, params: dict, deadline: float | None = None) -> RestAnswer:
        """``deadline`` (time.monotonic) bounds the wait for request weight."""
        weight = (
            depth_weight(int(params.get("limit", 100)))
            if path == DEPTH_PATH
            else WEIGHTS.get(path, 1)
        )
        self.bucket.take(weight, deadline, self.stopping)
        self.requests += 1
        response = self.session.get(self.base_url + path, params=params, timeout=self.timeout)
        if response.status_code != 200:
            retry_after = response.headers.get("Retry-After")
            raise BinanceRestError(
                f"GET {path} {params} -> HTTP {response.status_code}: {response.text[:200]}",
                status=response.status_code,
                retry_after=float(retry_after) if retry_after else None,
            )
        return RestAnswer(path, params, response.content)

    def server_time(self, deadline: float | None = None) -> tuple[int, int, int]:
        """(local ms when sent, the exchange's ``serverTime``, local ms when answered)."""
        sent = time.time_ns() // 1_000_000
        answer = self.get("/api/v3/time", {}, deadline)
        return sent, int(answer.json()["serverTime"]), time.time_ns() // 1_000_000

    def agg_trades(
        self, symbol: str, from_id: int, limit: int = 1000, deadline: float | None = None
    ) -> RestAnswer:
        params = {"symbol": symbol.upper(), "fromId": from_id, "limit": limit}
        return self.get("/api/v3/aggTrades", params, deadline)

    def historical_trades(
        self, symbol: str, from_id: int, limit: int = 1000, deadline: float | None = None
    ) -> RestAnswer:
        params = {"symbol": symbol.upper(), "fromId": from_id, "limit": limit}
        return self.get("/api/v3/historicalTrades", params, deadline)

    def klines(self, symbol: str, start_ms: int, end_ms: int, limit: int = 1000) -> RestAnswer:
        return self.get(
            "/api/v3/klines",
            {
                "symbol": symbol.upper(),
                "interval": "1m",
                "startTime": start_ms,
                "endTime": end_ms,
                "limit": limit,
            },
        )
