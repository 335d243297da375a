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
  frames and counts them (the gap tracker repairs lost trades from REST).
* Data frames are read in bursts (:class:`BurstConnection`): every complete frame of one socket
  read goes to the queue as one :class:`FrameBurst`, without a per-frame parser call, await or
  queue item, which is most of what receiving cost per message. websockets still does the
  handshake, pings, pongs and the close; a fragmented message is reassembled in its place in
  the burst, so messages reach the queue in the order sent by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import State

from quant_core.backoff import Backoff
from quant_resources.binance.urls import MAX_STREAMS_PER_CONNECTION, combined_url, shard

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RawFrame:
    recv_ns: int
    conn_id: int
    data: bytes


@dataclass(slots=True)
class FrameBurst:
    """The data frames of one socket read, in order (one queue item for all of them)."""

    recv_ns: int
    conn_id: int
    frames: list[bytes]

    def __len__(self) -> int:
        return len(self.frames)


# Data frames (FIN set, no RSV bits: nothing negotiated), text or binary, whole messages.
DATA_HEADERS = (0x81, 0x82)
# A fragmented message: its first frame (FIN clear), then continuations (FIN on the last).
FIRST_FRAGMENTS = (0x01, 0x02)
CONTINUATION, LAST_CONTINUATION = 0x00, 0x80
U16 = struct.Struct(">H").unpack_from  # extended payload lengths
U64 = struct.Struct(">Q").unpack_from
MAX_FRAME = 2**22  # bytes; a larger frame or message goes to websockets, which refuses it


class BurstConnection(ClientConnection):
    """A websockets client connection that hands every data message of a socket read to
    ``on_burst`` at once, in stream order. Until ``on_burst`` is set and what websockets
    already parsed has been read, everything goes through websockets as usual; from then on
    this class keeps the bytes of a frame that is not complete yet, and websockets is fed only
    whole control frames (pings, pongs, close), in their place in the stream, so its own parser
    always sits at a frame boundary.

    A fragmented message (Binance sends none) is reassembled here and joins the burst in its
    place, so no message can overtake another: every data message reaches ``on_burst``, in
    order, by construction. Anything else (a masked, compressed or oversized frame, a broken
    fragment sequence) ends bursting for good: what is not handed over yet goes to websockets
    whole, from a frame boundary, after the bursts before it, and websockets refuses it or
    delivers every later message through ``recv``, still in order."""

    on_burst: Callable[[list[bytes], int], None] | None = None
    _bursting = False
    _pending: bytearray | None = None
    _given_up = False
    # The fragmented message being reassembled: its frames as received, and their payloads.
    _fragment_raw: bytearray | None = None
    _fragment_parts: list[bytes] | None = None

    def _stop_bursting(self, rest: bytes) -> None:
        """Everything not yet handed over (a fragment's frames first) to websockets, whole."""
        self._bursting = False
        raw = self._fragment_raw or b""
        self._fragment_raw = self._fragment_parts = None
        self._pending = None
        super().data_received(bytes(raw) + bytes(rest))

    def data_received(self, data: bytes) -> None:
        if self._bursting and self.protocol.state is not State.OPEN:
            # Closing: websockets reads the rest (the peer's close frame among it) and pauses
            # reading when nobody takes its messages, so a closed connection stops delivering.
            self._stop_bursting(bytes(self._pending) + data)
            return
        if not self._bursting:
            if (
                self._given_up
                or self.on_burst is None
                or self.protocol.state is not State.OPEN
                or len(self.recv_messages.frames)
                or self.protocol.reader.buffer
            ):
                super().data_received(data)
                return
            self._bursting = True
            self._pending = bytearray()
        buf = self._pending
        buf += data
        end, pos = len(buf), 0
        frames: list[bytes] = []
        view = memoryview(buf)  # one copy per frame (a bytearray slice would make two)
        while end - pos >= 2:
            first, length = buf[pos], buf[pos + 1]
            head = 2
            if length & 0x80:  # masked: not from a server; websockets refuses it
                first, length = -1, 0
            elif length == 126:
                if end - pos < 4:
                    break
                length, head = U16(buf, pos + 2)[0], 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = U64(buf, pos + 2)[0], 10
            if length > MAX_FRAME:  # not buffered here: websockets refuses it (max_size)
                first, length = -1, 0
            stop = pos + head + length
            if first >= 0 and stop > end:
                break
            if first in DATA_HEADERS and self._fragment_parts is None:
                frames.append(bytes(view[pos + head : stop]))
            elif 0x88 <= first <= 0x8A:  # close, ping, pong: websockets answers
                if frames:
                    self.on_burst(frames, time.time_ns())
                    frames = []
                super().data_received(bytes(view[pos:stop]))
            elif (message := self._fragment(first, view, pos, head, stop)) is not None:
                if message is not False:
                    frames.append(message)
            else:  # not for this reader: websockets takes over from this frame on
                if frames:
                    self.on_burst(frames, time.time_ns())
                rest = bytes(view[pos:])
                view.release()
                self._given_up = True
                self._stop_bursting(rest)
                return
            pos = stop
        view.release()
        if pos:
            del buf[:pos]
        if frames:
            self.on_burst(frames, time.time_ns())

    def _fragment(self, first: int, view: memoryview, pos: int, head: int, stop: int):
        """A frame of a fragmented message: False while it is incomplete, the whole message
        on its last frame, None when the frame breaks the sequence (or the size limit)."""
        parts = self._fragment_parts
        if first in FIRST_FRAGMENTS and parts is None:
            self._fragment_raw, self._fragment_parts = bytearray(), []
        elif first not in (CONTINUATION, LAST_CONTINUATION) or parts is None:
            return None
        raw, parts = self._fragment_raw, self._fragment_parts
        if len(raw) + stop - pos > MAX_FRAME + 64:
            return None
        raw += view[pos:stop]
        parts.append(bytes(view[pos + head : stop]))
        if first != LAST_CONTINUATION:
            return False
        self._fragment_raw = self._fragment_parts = None
        return b"".join(parts)


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
        if isinstance(ws, BurstConnection):
            ws.on_burst = self._burst

    def _burst(self, frames: list[bytes], recv_ns: int) -> None:
        """The data frames of one socket read (``BurstConnection``): to the queue as one item."""
        self.last_rx = time.monotonic()
        self.first_frame.set()
        stats = self.client.stats
        for data in frames:
            if not data.startswith(b'{"stream"'):  # market data is wrapped; look at the rest
                self._control(data)
        stats.frames += len(frames)
        stats.bytes += sum(map(len, frames))
        self.client.put(FrameBurst(recv_ns, self.id, frames))

    @property
    def age(self) -> float:
        return time.monotonic() - self.opened

    async def _read(self) -> None:
        stats = self.client.stats
        try:
            while True:
                data = await self.ws.recv(decode=False)
                recv_ns = time.time_ns()
                self.last_rx = time.monotonic()
                self.first_frame.set()
                self._control(data)
                stats.frames += 1
                stats.bytes += len(data)
                self.client.put(RawFrame(recv_ns, self.id, data))
        except ConnectionClosed:
            return

    def _control(self, data: bytes) -> None:
        """Subscription answers and ``serverShutdown`` act on the connection."""
        if data.startswith((b'{"result"', b'{"error"', b'{"id"')):
            self._ack(data)
        elif b"serverShutdown" in data[:80]:
            self.shutdown.set()

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
    """Runs every shard until ``stop`` is set; frames land in ``out`` as :class:`FrameBurst`
    (or :class:`RawFrame`, one frame, when websockets delivered it). ``out`` holds at most
    ``max_frames`` frames (default: its ``maxsize``); the consumer calls ``taken`` with the
    frames of each item it takes."""

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
        max_frames: int | None = None,
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
        self.max_frames = max_frames or out.maxsize or 2**62
        self.queued_frames = 0  # in ``out``, not yet ``taken``
        self.request_ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._current: dict[int, _Connection] = {}
        self.on_event: Callable[[str, int, str], None] = lambda kind, conn_id, detail: None

    def put(self, item: FrameBurst | RawFrame) -> None:
        """Queue what a connection received; never blocks: what does not fit is dropped and
        counted (the gap tracker repairs the trades from REST)."""
        n = len(item.frames) if isinstance(item, FrameBurst) else 1
        if self.queued_frames + n > self.max_frames:
            self.stats.drops += n
            return
        try:
            self.out.put_nowait(item)
        except asyncio.QueueFull:
            self.stats.drops += n
            return
        self.queued_frames += n

    def taken(self, frames: int) -> None:
        """The consumer took ``frames`` frames out of the queue."""
        self.queued_frames -= frames

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
        ws = await connect(
            url,
            max_size=MAX_FRAME,
            ping_interval=20,
            ping_timeout=20,
            open_timeout=10,
            compression=None,  # whole plain frames for the burst reader
            create_connection=BurstConnection,
        )
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
