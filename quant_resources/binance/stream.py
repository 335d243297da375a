"""Binance combined-stream client: shards, keep-alive, reconnects, handovers, subscriptions.

* Streams are sharded at most 1024 per connection (Binance's limit).
* websockets answers every server ping with a pong and pings the server itself; a watchdog
  also replaces a connection that has been silent for ``silence_s``.
* Failed connections are retried with capped exponential backoff and full jitter, reset after
  a healthy period.
* Ahead of the 24-hour connection limit and on ``serverShutdown``, a new connection is opened
  *before* the old one is closed (handover), so no frame is missed; the overlap's duplicates
  are dropped downstream by trade id.
* SUBSCRIBE/UNSUBSCRIBE carry ids and wait for their ack; at most 5 messages a second leave a
  connection (Binance disconnects above that).
* Readers never block: frames go to a bounded queue with ``put_nowait``; a full queue drops the
  frame and counts it (the gap tracker repairs lost trades from REST).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from quant_core.backoff import Backoff
from quant_resources.binance.urls import MAX_STREAMS_PER_CONNECTION, combined_url, shard

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RawFrame:
    recv_ns: int
    conn_id: int
    data: bytes


@dataclass
class StreamStats:
    frames: int = 0
    bytes: int = 0
    drops: int = 0
    connects: int = 0
    reconnects: int = 0
    handovers: int = 0
    failures: Counter = field(default_factory=Counter)


class SubscriptionError(RuntimeError):
    """Binance refused a SUBSCRIBE/UNSUBSCRIBE, or did not acknowledge it in time."""


class _RateLimiter:
    """At most ``per_second`` sends in any one-second window."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._sent: list[float] = []

    async def wait(self) -> None:
        while True:
            now = time.monotonic()
            self._sent = [t for t in self._sent if now - t < 1.0]
            if len(self._sent) < self.per_second:
                self._sent.append(now)
                return
            await asyncio.sleep(1.0 - (now - self._sent[0]) + 0.001)


class _Connection:
    def __init__(self, conn_id: int, ws: ClientConnection, client: BinanceStreamClient) -> None:
        self.id = conn_id
        self.ws = ws
        self.client = client
        self.opened = time.monotonic()
        self.last_rx = self.opened
        self.first_frame = asyncio.Event()
        self.shutdown = asyncio.Event()
        self.acks: dict[int, asyncio.Future] = {}
        self.limiter = _RateLimiter(client.max_sends_per_s)
        self.reader = asyncio.create_task(self._read(), name=f"binance-reader-{conn_id}")

    @property
    def age(self) -> float:
        return time.monotonic() - self.opened

    async def _read(self) -> None:
        out, stats = self.client.out, self.client.stats
        try:
            while True:
                data = await self.ws.recv(decode=False)
                recv_ns = time.time_ns()
                self.last_rx = time.monotonic()
                self.first_frame.set()
                if data.startswith((b'{"result"', b'{"error"', b'{"id"')):
                    self._ack(data)
                elif b"serverShutdown" in data[:80]:
                    self.shutdown.set()
                stats.frames += 1
                stats.bytes += len(data)
                try:
                    out.put_nowait(RawFrame(recv_ns, self.id, data))
                except asyncio.QueueFull:
                    stats.drops += 1
        except ConnectionClosed:
            return

    def _ack(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        future = self.acks.pop(message.get("id"), None)
        if future is not None and not future.done():
            future.set_result(message)

    async def request(self, method: str, params: list[str], timeout: float) -> dict:
        request_id = next(self.client.request_ids)
        future = asyncio.get_running_loop().create_future()
        self.acks[request_id] = future
        await self.limiter.wait()
        await self.ws.send(
            orjson.dumps({"method": method, "params": params, "id": request_id}).decode()
        )
        try:
            answer = await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise SubscriptionError(f"{method} id={request_id} was not acknowledged") from exc
        if "error" in answer:
            raise SubscriptionError(f"{method} {params} refused: {answer['error']}")
        return answer

    def why_replace(self, silence_s: float, max_age_s: float) -> str | None:
        if self.reader.done():
            return "closed"
        if self.shutdown.is_set():
            return "shutdown"
        if self.age >= max_age_s:
            return "aged"
        if time.monotonic() - self.last_rx >= silence_s:
            return "silent"
        return None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader


class BinanceStreamClient:
    """Runs every shard until ``stop`` is set; frames land in ``out`` as :class:`RawFrame`."""

    def __init__(
        self,
        base_url: str,
        names: list[str],
        out: asyncio.Queue,
        *,
        silence_s: float = 30.0,
        max_age_s: float = 23.5 * 3600,
        handover_timeout_s: float = 10.0,
        max_sends_per_s: int = 5,
        per_connection: int = MAX_STREAMS_PER_CONNECTION,
        backoff_factory: Callable[[], Backoff] = Backoff,
        ack_timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url
        self.shards = shard(list(names), per_connection)
        self.per_connection = per_connection
        self.out = out
        self.silence_s = silence_s
        self.max_age_s = max_age_s
        self.handover_timeout_s = handover_timeout_s
        self.max_sends_per_s = max_sends_per_s
        self.backoff_factory = backoff_factory
        self.ack_timeout_s = ack_timeout_s
        self.stats = StreamStats()
        self.request_ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._current: dict[int, _Connection] = {}
        self.on_event: Callable[[str, int, str], None] = lambda kind, conn_id, detail: None

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._shard(index, stop), name=f"binance-shard-{index}")
            for index in range(len(self.shards))
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for conn in list(self._current.values()):
                await conn.close()

    async def _open(self, index: int) -> _Connection:
        url = combined_url(self.base_url, self.shards[index])
        ws = await connect(url, max_size=2**22, ping_interval=20, ping_timeout=20, open_timeout=10)
        conn = _Connection(next(self._conn_ids), ws, self)
        self.stats.connects += 1
        self.on_event("open", conn.id, url)
        return conn

    async def _shard(self, index: int, stop: asyncio.Event) -> None:
        backoff = self.backoff_factory()
        while not stop.is_set():
            old = self._current.get(index)
            try:
                conn = await self._open(index)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                self.stats.failures[type(exc).__name__] += 1
                delay = backoff.next_delay()
                log.warning("binance connect failed (%s); retry in %.2fs", exc, delay)
                await _sleep_or_stop(stop, delay)
                continue
            if old is not None:
                # Handover: keep the old connection until the new one delivers.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(conn.first_frame.wait(), self.handover_timeout_s)
                await old.close()
                self.on_event("close", old.id, "handover")
            self._current[index] = conn
            reason = await self._watch(conn, stop)
            backoff.connected_for(conn.age)
            self.on_event("replace", conn.id, reason)
            if reason == "stop":
                await conn.close()
                self._current.pop(index, None)
                return
            if reason in ("aged", "shutdown"):
                self.stats.handovers += 1
                continue  # open the successor while this one still streams
            self.stats.reconnects += 1
            await conn.close()
            self._current.pop(index, None)
            await _sleep_or_stop(stop, backoff.next_delay())

    async def _watch(self, conn: _Connection, stop: asyncio.Event) -> str:
        while True:
            if stop.is_set():
                return "stop"
            reason = conn.why_replace(self.silence_s, self.max_age_s)
            if reason:
                return reason
            await _sleep_or_stop(stop, 0.25)

    async def subscribe(self, names: list[str]) -> None:
        """Add streams live (SUBSCRIBE on the shard with room, acked by id)."""
        for name in names:
            index = next(
                (i for i, s in enumerate(self.shards) if len(s) < self.per_connection), None
            )
            if index is None or index not in self._current:
                raise SubscriptionError(f"no open connection with room for {name}")
            await self._current[index].request("SUBSCRIBE", [name], self.ack_timeout_s)
            self.shards[index].append(name)

    async def unsubscribe(self, names: list[str]) -> None:
        for name in names:
            index = next((i for i, s in enumerate(self.shards) if name in s), None)
            if index is None:
                raise SubscriptionError(f"{name} is not subscribed")
            await self._current[index].request("UNSUBSCRIBE", [name], self.ack_timeout_s)
            self.shards[index].remove(name)

    def connected(self) -> int:
        """How many connections are up now (one per shard when all are)."""
        return sum(1 for c in self._current.values() if not c.reader.done())

    def settled(self, seconds: float) -> bool:
        """Every shard connected, none (re)connected in the last ``seconds``, all streaming."""
        now = time.monotonic()
        conns = [self._current.get(i) for i in range(len(self.shards))]
        return all(
            c is not None
            and not c.reader.done()
            and now - c.opened >= seconds
            and now - c.last_rx < 2.0
            for c in conns
        )


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
