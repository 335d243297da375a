"""One WebSocket client of the combined-stream endpoint: subscriptions, Binance's connection
limits, server pings, and the faults injected into what it is sent.

Binance documents ordering only within a stream (ids of one stream increase); nothing is said
about the order across streams, so the `reorder` fault only swaps adjacent frames of
different streams of the same symbol (e.g. a bookTicker overtaking the aggTrade before it).
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections import Counter, deque
from typing import TYPE_CHECKING

import orjson

from quant_dev.binance_sim import clock, wire
from quant_dev.binance_sim.market import fmt8

if TYPE_CHECKING:
    from quant_dev.binance_sim.server import Simulator

STREAM_KINDS = ("aggTrade", "trade", "bookTicker", "depth@100ms", "depth")
STREAM_RE = re.compile(r"^([a-z0-9]{2,20})@(aggTrade|trade|bookTicker|depth@100ms|depth)$")
MAX_STREAMS = 1024
# Faults that need frames to act on wait for the next batch; the others act at once.
DATA_FAULTS = ("duplicate", "malformed", "reorder", "drops", "lose")
TRADE_KINDS = ("aggTrade", "trade")


@functools.lru_cache(maxsize=4096)
def stream_kind(stream: str) -> str:
    """'btcusdt@aggTrade' -> 'aggTrade' (the kind a stream's frames are counted under)."""
    return stream[stream.index("@") + 1 :]


class StreamNameError(ValueError):
    pass


def check_streams(names: list[str]) -> list[str]:
    for name in names:
        if not isinstance(name, str) or not STREAM_RE.match(name):
            raise StreamNameError(
                f"invalid stream name {name!r}: the simulator serves "
                "<lower-case symbol>@aggTrade, @trade, @bookTicker, @depth@100ms and @depth"
            )
    return names


class WsSession:
    def __init__(self, sim: Simulator, transport: asyncio.Transport, streams: list[str]) -> None:
        self.sim = sim
        self.transport = transport
        self.streams: set[str] = set()
        self.reader = wire.FrameReader()
        self.opened = time.monotonic()
        self.incoming: deque[float] = deque()
        self.closed = False
        self.next_ping = self.opened + sim.config.ping_interval
        self.ping_payload: bytes | None = None
        self.pong_deadline = 0.0
        self.pings = 0
        self.stalled_until = 0.0
        self.backlog: list[bytes] = []
        self.close_at = 0.0  # serverShutdown grace
        self.pending: list[tuple[str, float | None]] = []
        self.recent_trades: deque[bytes] = deque(maxlen=32)
        # Trade frames still to leave out (the `drops` fault); what a closed connection still
        # owed passes to the next one, so `drops:N:k` leaves out N*k frames whatever else fires.
        self.dropping, sim.drops_owed = sim.drops_owed, 0
        self.losing, sim.lose_owed = sim.lose_owed, 0  # the same for `lose`
        self.subscribe(streams)

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, names: list[str]) -> None:
        new = [n for n in names if n not in self.streams]
        self.streams.update(new)
        self.sim.streams_changed(new, +1)

    def unsubscribe(self, names: list[str]) -> None:
        gone = [n for n in names if n in self.streams]
        self.streams.difference_update(gone)
        self.sim.streams_changed(gone, -1)

    # -- incoming -----------------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            messages = self.reader.feed(data)
        except wire.FrameError as exc:
            self.close(exc.code, str(exc))
            return
        now = time.monotonic()
        for op, payload in messages:
            if self.closed:
                return
            if op == wire.OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
                self.close(code if 1000 <= code < 5000 else 1000, "", reply=True)
                return
            # Binance counts pings, pongs and JSON messages against the per-second limit.
            self.incoming.append(now)
            while self.incoming and self.incoming[0] <= now - 1.0:
                self.incoming.popleft()
            if len(self.incoming) > self.sim.config.max_incoming_per_s:
                self.sim.stats["rate_limit_disconnects"] += 1
                self.close(1008, "Too many requests")
                return
            if op == wire.OP_PING:
                self.transport.write(wire.frame(payload, wire.OP_PONG))
            elif op == wire.OP_PONG:
                # Unsolicited pongs are allowed but do not keep the connection alive.
                if self.ping_payload is not None and payload == self.ping_payload:
                    self.ping_payload = None
                    self.sim.stats["pongs_received"] += 1
            else:
                self.on_message(payload)

    def on_message(self, payload: bytes) -> None:
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            self.reply(None, error=(3, f"Invalid JSON: {exc}"))
            return
        if not isinstance(msg, dict):
            self.reply(None, error=(2, "Invalid request: expected a JSON object"))
            return
        rid = msg.get("id")
        if not (rid is None or isinstance(rid, str) or (type(rid) is int and rid >= 0)):
            self.reply(None, error=(2, "Invalid request: request ID must be an unsigned integer"))
            return
        method, params = msg.get("method"), msg.get("params")
        unknown = set(msg) - {"method", "params", "id"}
        if unknown:
            self.reply(rid, error=(0, f"Unknown property: {sorted(unknown)[0]}"))
        elif method == "LIST_SUBSCRIPTIONS":
            self.reply(rid, result=sorted(self.streams))
        elif method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not params:
                self.reply(rid, error=(2, "Invalid request: params must be a list of streams"))
                return
            try:
                check_streams(params)
            except StreamNameError as exc:
                self.reply(rid, error=(2, f"Invalid request: {exc}"))
                return
            if method == "SUBSCRIBE":
                if len(self.streams | set(params)) > MAX_STREAMS:
                    self.reply(rid, error=(2, f"Invalid request: more than {MAX_STREAMS} streams"))
                    return
                self.subscribe(params)
            else:
                self.unsubscribe(params)
            self.reply(rid, result=None)
        else:
            self.reply(rid, error=(2, f"Invalid request: unknown method {method!r}"))

    def reply(self, rid, result=None, error: tuple[int, str] | None = None) -> None:
        if error is not None:
            body = {"error": {"code": error[0], "msg": error[1]}, "id": rid}
            self.sim.stats["frames_sent"]["error"] += 1
        else:
            body = {"result": result, "id": rid}
            self.sim.stats["frames_sent"]["result"] += 1
        self.write([wire.frame(orjson.dumps(body))])

    # -- outgoing -----------------------------------------------------------------------

    def write(self, frames: list[bytes]) -> None:
        if self.closed:
            return
        if self.stalled_until:
            self.backlog.extend(frames)
            return
        # A slow reader is one that has not taken what was sent before: measured ahead of this
        # write, not after it. An overloaded simulator catches up to a second's worth in one
        # tick (at 50,000 msgs/s about 7.5 MB), and that burst is not the client's doing.
        if self.transport.get_write_buffer_size() > self.sim.config.max_send_buffer:
            self.sim.stats["slow_reader_drops"] += 1
            self.abort()
            return
        self.transport.write(b"".join(frames))

    def deliver(self, items: list[tuple[str, bytes]], n_active: int) -> None:
        """items: (stream, frame) of one generation tick, in generation order, for the
        n_active streams someone subscribes to."""
        if self.closed:
            return
        everything = len(self.streams) == n_active  # ours are a subset of the active ones
        mine = items if everything else [it for it in items if it[0] in self.streams]
        if not mine:
            return
        faults = self.pending + self.sim.plan.advance(len(mine))
        self.pending = []
        if faults:
            mine = list(mine)
            for kind, param in faults:
                if not self.apply_fault(kind, param, mine):
                    self.pending.append((kind, param))
                if self.closed:
                    return
        sent = self.sim.stats["frames_sent"]
        if not (self.losing or self.dropping or faults):
            # Nothing to leave out (the usual case): no per-frame Python beyond the counts.
            for kind, n in Counter(map(stream_kind, [stream for stream, _ in mine])).items():
                if kind in sent:
                    sent[kind] += n
            recent, want = [], self.recent_trades.maxlen
            for stream, f in reversed(mine):
                if stream_kind(stream) in TRADE_KINDS:
                    recent.append(f)
                    if len(recent) == want:
                        break
            self.recent_trades.extend(reversed(recent))
            self.write([f for _, f in mine])
            return
        out = []
        for stream, f in mine:
            kind = stream[stream.index("@") + 1 :]
            if kind in TRADE_KINDS:
                if self.losing:  # aggTrade or trade: REST forgets it too
                    self.losing -= 1
                    self.sim.lose(f)
                    continue
                if self.dropping:
                    self.dropping -= 1
                    self.sim.stats["frames_dropped"] += 1
                    continue
                self.recent_trades.append(f)
            if kind in sent:
                sent[kind] += 1
            out.append(f)
        self.write(out)

    def apply_fault(self, kind: str, param: float | None, batch: list[tuple[str, bytes]]) -> bool:
        """Apply one fault to the batch about to be sent; False when it cannot apply yet."""
        plan, stats = self.sim.plan, self.sim.stats
        if kind == "duplicate":
            trades = list(self.recent_trades) + [f for s, f in batch if "@bookTicker" not in s]
            if not trades:
                return False
            batch.append(("duplicate@dup", trades[-1 - plan.pick(min(len(trades), 16))]))
            stats["frames_sent"]["duplicate"] += 1
        elif kind == "reorder":
            for i in range(len(batch) - 1):
                (s1, _), (s2, _) = batch[i], batch[i + 1]
                if s1 != s2 and s1.split("@")[0] == s2.split("@")[0]:
                    batch[i], batch[i + 1] = batch[i + 1], batch[i]
                    break
            else:
                return False
        elif kind == "malformed":
            batch.append(("malformed@bad", self.malformed_frame(batch)))
            stats["frames_sent"]["malformed"] += 1
        elif kind == "drops":
            # Armed here, carried out as the trade frames go out (this batch's and later ones).
            self.dropping += int(1 if param is None else param)
        elif kind == "lose":
            self.losing += int(1 if param is None else param)
        else:
            applied = self.apply_connection_fault(kind, param)
            if applied is not True:
                return applied is None  # None: absorbed by the same fault already under way
        stats["faults"][kind] += 1
        return True

    def apply_connection_fault(self, kind: str, param: float | None) -> bool | None:
        if kind == "disconnect":
            self.abort()
        elif kind == "slowreader":
            # The same path as a real slow reader: the send buffer is deemed full, drop it.
            self.sim.stats["slow_reader_drops"] += 1
            self.abort()
        elif kind == "stall":
            if self.stalled_until:
                return None
            # Stop reading too, so pings go unanswered; what is generated meanwhile arrives late.
            self.stalled_until = time.monotonic() + (param or 0.0)
            self.transport.pause_reading()
        elif kind == "shutdown":
            if self.close_at:
                return None
            event = {"e": "serverShutdown", "E": clock.now_ms()}  # tlive
            self.write([wire.frame(orjson.dumps(event))])
            self.sim.stats["frames_sent"]["serverShutdown"] += 1
            self.close_at = time.monotonic() + (param or 0.0)
        else:
            return False
        return True

    def malformed_frame(self, batch: list[tuple[str, bytes]]) -> bytes:
        symbol = batch[0][0].split("@")[0] if batch else "btcusdt"
        stream, upper = f"{symbol}@aggTrade", symbol.upper()
        now = clock.now_ms()  # tlive: shifted clock
        variant = self.sim.plan.pick(4)
        if variant == 0:  # cut short: not JSON at all
            return wire.frame(f'{{"stream":"{stream}","data":{{"e":"aggTrade","E":{now},'.encode())
        if variant == 3:  # a stream nobody subscribed to, of an unknown event type
            body = f'{{"stream":"{symbol}@bogus","data":{{"e":"bogus","E":{now},"s":"{upper}"}}}}'
            return wire.frame(body.encode())
        qty = '"NaN"' if variant == 1 else f'"{fmt8(-1_250_000)}"'
        body = (
            f'{{"stream":"{stream}","data":{{"e":"aggTrade","E":{now},"s":"{upper}","a":0,'
            f'"p":"1.00000000","q":{qty},"f":0,"l":0,"T":{now},"m":false,"M":true}}}}'
        )
        return wire.frame(body.encode())

    # -- timers -------------------------------------------------------------------------

    def housekeeping(self, now: float) -> None:
        if self.closed:
            return
        cfg = self.sim.config
        for kind, param in [p for p in self.pending if p[0] not in DATA_FAULTS]:
            self.pending.remove((kind, param))
            self.apply_fault(kind, param, [])
            if self.closed:
                return
        if self.stalled_until:
            if now < self.stalled_until:
                return
            self.stalled_until = 0.0
            self.transport.resume_reading()
            # Pongs we did not read while stalled are not the client's fault.
            self.pong_deadline = max(self.pong_deadline, now + cfg.pong_timeout)
            backlog, self.backlog = self.backlog, []
            if backlog:
                self.write(backlog)
        if self.close_at and now >= self.close_at:
            self.close(1001, "server shutdown")
        elif now - self.opened >= cfg.max_conn_seconds:
            self.sim.stats["lifetime_disconnects"] += 1
            self.close(1000, "connection lifetime exceeded")
        elif self.ping_payload is not None and now >= self.pong_deadline:
            self.sim.stats["ping_timeouts"] += 1
            self.close(1008, "pong timeout")
        elif now >= self.next_ping:
            self.next_ping = now + cfg.ping_interval
            if self.ping_payload is None:  # an unanswered ping keeps its deadline
                self.pings += 1
                self.ping_payload = str(self.pings).encode()
                self.pong_deadline = now + cfg.pong_timeout
            self.sim.stats["pings_sent"] += 1
            self.write([wire.frame(self.ping_payload, wire.OP_PING)])

    # -- closing ------------------------------------------------------------------------

    def close(self, code: int, reason: str, reply: bool = False) -> None:
        if self.closed:
            return
        self.stalled_until = 0.0
        self.write([wire.close_frame(code, reason)])
        self._closed()
        self.transport.close()  # flushes what is buffered, then FIN

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        if self.closed:
            return
        self._closed()
        self.transport.abort()

    def _closed(self) -> None:
        self.closed = True
        self.backlog = []
        self.sim.drops_owed += self.dropping
        self.sim.lose_owed += self.losing
        self.dropping = self.losing = 0
        self.unsubscribe(list(self.streams))
        self.sim.sessions.discard(self)
