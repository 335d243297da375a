"""The simulator process: one asyncio server on one port for the WebSocket streams
(``/stream?streams=...``) and the REST API (``/api/v3/...``, ``/_sim/...``), plus the market
clock that generates trades and fans the frames out."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson

from quant_dev.binance_sim import clock, faults, rest, wire
from quant_dev.binance_sim.depth import DEPTH_TICK_S, DepthFeed
from quant_dev.binance_sim.market import Market, SymbolMarket, fmt8
from quant_dev.binance_sim.ws import MAX_STREAMS, StreamNameError, WsSession, check_streams

TICK_EVENTS = 200  # events per market tick at high rates (see Simulator.run)
TICK_S = 0.01  # the longest tick at high rates
FRAME_KINDS = (
    "aggTrade",
    "trade",
    "bookTicker",
    "serverShutdown",
    "malformed",
    "duplicate",
    "result",
    "error",
)


@dataclass
class SimConfig:
    symbols: list[str] = field(default_factory=lambda: ["btcusdt", "ethusdt"])
    rate: float = 200.0  # aggregate trades per second over all symbols
    faults: str = ""
    seed: int = 7
    start_trade_id: int = 1
    ping_interval: float = 20.0
    pong_timeout: float = 60.0
    max_conn_seconds: float = 86_400.0
    weight_limit: int = 6000
    history: int = 2_000_000  # trades kept per symbol
    max_send_buffer: int = 8 * 1024 * 1024  # bytes queued for one client before it is dropped
    fault_gap: int = 1000  # mean data frames between the firings of a counted fault
    max_incoming_per_s: int = 5


class Simulator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.market = Market(config.symbols, config.seed, config.start_trade_id, config.history)
        self.plan = faults.FaultPlan(faults.parse(config.faults), config.seed, config.fault_gap)
        self.limiter = rest.WeightLimiter(config.weight_limit)
        specs = {s: (m.spec.start_price, m.spec.tick) for s, m in self.market.symbols.items()}
        self.depth = DepthFeed(specs, config.seed)
        self.api = rest.API  # path -> handler(sim, query)
        self.sessions: set[WsSession] = set()
        self.active: Counter[str] = Counter()  # stream -> subscribed sessions
        self.paused = False
        self.rate = config.rate
        self.drops_owed = 0  # trade frames a closed connection's `drops` had still to leave out
        self.lose_owed = 0  # the same for `lose`
        self.lost: dict[str, set[int]] = {}  # symbol -> agg ids `lose` took from stream and REST
        self.lost_trades: dict[str, set[int]] = {}  # the same for trade ids (`trade` stream)
        self.stats: dict = {
            "frames_sent": dict.fromkeys(FRAME_KINDS, 0),
            "faults": dict.fromkeys(faults.KINDS, 0),
            "connections_total": 0,
            "pings_sent": 0,
            "pongs_received": 0,
            "ping_timeouts": 0,
            "rate_limit_disconnects": 0,
            "lifetime_disconnects": 0,
            "slow_reader_drops": 0,
            "frames_dropped": 0,  # trade frames the `drops` fault left out
            "trades_lost": 0,  # aggTrade frames the `lose` fault left out (and REST forgot)
            "rest_requests": 0,
            "rest_429": 0,
        }

    # -- control ------------------------------------------------------------------------

    def streams_changed(self, names: list[str], delta: int) -> None:
        for name in names:
            self.active[name] += delta
            if self.active[name] <= 0:
                del self.active[name]

    def set_faults(self, spec: str) -> None:
        self.plan = faults.FaultPlan(faults.parse(spec), self.config.seed, self.config.fault_gap)

    def lose(self, frame: bytes) -> None:
        """The `lose` fault took this aggTrade or trade frame: REST forgets its trade too
        (``/api/v3/aggTrades`` or ``/api/v3/historicalTrades``)."""
        data = orjson.loads(wire.server_payload(frame))
        data = data.get("data", data)
        lost, key = (self.lost, "a") if data.get("e") == "aggTrade" else (self.lost_trades, "t")
        lost.setdefault(str(data["s"]).upper(), set()).add(int(data[key]))
        self.stats["trades_lost"] += 1

    def without_lost(self, symbol: str, rows: list[dict], limit: int, key: str = "a") -> list[dict]:
        """REST rows (fetched ``limit`` + lost more) without the lost trades: aggTrades rows
        by their agg id (``key`` "a"), historicalTrades rows by their trade id ("id")."""
        lost = (self.lost if key == "a" else self.lost_trades).get(symbol.upper())
        return [r for r in rows if r[key] not in lost][:limit] if lost else rows[:limit]

    def trigger(self, kind: str, param: float | None) -> int:
        for session in self.sessions:
            session.pending.append((kind, param))
        return len(self.sessions)

    def control_market(self, paused: object, rate: object) -> None:
        if paused is not None:
            self.paused = bool(paused)
        if rate is not None:
            if not isinstance(rate, int | float) or rate <= 0:
                raise ValueError(f"rate={rate!r} must be a positive number")
            self.rate = float(rate)

    def snapshot(self) -> dict:
        def per_symbol(fn) -> dict:
            return {s: fn(m) for s, m in self.market.symbols.items()}

        return {
            **self.stats,
            "connections_open": len(self.sessions),
            "trades_generated": per_symbol(lambda m: m.next_trade_id - m.start_trade_id),
            "aggs_generated": per_symbol(lambda m: m.next_agg_id - m.start_agg_id),
            "last_trade_id": per_symbol(lambda m: m.next_trade_id - 1),
            "last_agg_id": per_symbol(lambda m: m.next_agg_id - 1),
            "first_trade_id": per_symbol(lambda m: m.start_trade_id),
            "first_agg_id": per_symbol(lambda m: m.start_agg_id),
            "paused": self.paused,
            "rate": self.rate,
            "lost_agg_ids": {s: sorted(ids) for s, ids in self.lost.items()},
            "lost_trade_ids": {s: sorted(ids) for s, ids in self.lost_trades.items()},
            "faults_planned": self.plan.describe(),
            "fault_frames": self.plan.frames,
        }

    # -- market clock -------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last, carry = loop.time(), 0.0
        next_depth = last
        while True:
            # Sleep about one event apart at low rates; at high ones, a tick of TICK_EVENTS
            # events (at most TICK_S apart): generating costs a fixed numpy overhead per tick
            # and symbol, which 1 ms ticks paid for two or three events (the simulator, not the
            # client, then limited what a benchmark could offer).
            tick = max(1.0 / self.rate, min(TICK_S, TICK_EVENTS / self.rate))
            await asyncio.sleep(min(0.05, tick))
            now = loop.time()
            if self.paused:
                last, carry = now, 0.0
            else:
                # An overloaded loop catches up at most one second's worth, then falls behind.
                due = min((now - last) * self.rate, self.rate) + carry
                n = int(due)
                last, carry = now, due - n
                if n:
                    generated = self.market.generate(n)
                    self.depth.observe(generated)
                    self.publish(generated)
                if now >= next_depth:  # a depth diff every 100 ms while the market runs
                    next_depth = max(next_depth + DEPTH_TICK_S, now)
                    diffs = self.depth.tick(clock.now_ms(), self.active)  # tlive
                    self.deliver([(stream, wire.frame(payload)) for stream, payload in diffs])
            mono = time.monotonic()
            for session in list(self.sessions):
                session.housekeeping(mono)

    def publish(self, generated: list[tuple[SymbolMarket, list]]) -> None:
        active = self.active
        if not active or not self.sessions:
            return
        e_ms = clock.now_ms()  # tlive: shifted clock
        items: list[tuple[str, bytes]] = []
        add, frame = items.append, wire.frame
        heads = wire.TEXT_HEADS  # frame() inlined for the two streams of every event
        for m, events in generated:
            sym, sl = m.spec.symbol, m.stream
            s_agg, s_trade, s_book = f"{sl}@aggTrade", f"{sl}@trade", f"{sl}@bookTicker"
            w_agg, w_trade, w_book = s_agg in active, s_trade in active, s_book in active
            if not (w_agg or w_trade or w_book):
                continue
            e = max(e_ms, m.last_time)  # event time is never before the trade time
            for a, f, last, p, qtys, agg_qty, maker, t, book in events:
                ps, mk = fmt8(p), "true" if maker else "false"
                if w_agg:
                    body = (
                        f'{{"stream":"{s_agg}","data":{{"e":"aggTrade","E":{e},"s":"{sym}",'
                        f'"a":{a},"p":"{ps}","q":"{fmt8(agg_qty)}","f":{f},"l":{last},"T":{t},'
                        f'"m":{mk},"M":true}}}}'.encode()
                    )
                    add((s_agg, heads[len(body)] + body if len(body) < 4096 else frame(body)))
                if w_trade:
                    for i, q in enumerate(qtys):
                        add(
                            (
                                s_trade,
                                frame(
                                    f'{{"stream":"{s_trade}","data":{{"e":"trade","E":{e},"s":"{sym}",'
                                    f'"t":{f + i},"p":"{ps}","q":"{fmt8(q)}","T":{t},"m":{mk},'
                                    f'"M":true}}}}'.encode()
                                ),
                            )
                        )
                if w_book:
                    u, b, bq, ask, aq = book
                    body = (
                        f'{{"stream":"{s_book}","data":{{"u":{u},"s":"{sym}","b":"{fmt8(b)}",'
                        f'"B":"{fmt8(bq)}","a":"{fmt8(ask)}","A":"{fmt8(aq)}"}}}}'.encode()
                    )
                    add((s_book, heads[len(body)] + body if len(body) < 4096 else frame(body)))
        self.deliver(items)

    def deliver(self, items: list[tuple[str, bytes]]) -> None:
        """Fan (stream, WebSocket frame) items out; each session takes the streams it has."""
        if items:
            n_active = len(self.active)
            for session in list(self.sessions):
                session.deliver(items, n_active)


class SimProtocol(asyncio.Protocol):
    """One TCP connection: HTTP/1.1 keep-alive requests until it upgrades to a WebSocket."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.buf = bytearray()
        self.session: WsSession | None = None
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.holding = False  # an answer is held back: later requests wait in ``buf``

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else ""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None and not self.session.closed:
            self.session._closed()

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.on_data(data)
            return
        assert self.transport is not None
        self.buf += data
        while not self.transport.is_closing() and not self.holding:
            try:
                req, used = wire.parse_request(self.buf)
                if req is None:
                    return
                del self.buf[:used]
                if req.is_websocket:
                    self.upgrade(req)
                    return
            except wire.HttpError as exc:
                body = orjson.dumps({"code": -1000, "msg": str(exc)})
                self.transport.write(wire.http_response(exc.status, body, keep_alive=False))
                self.transport.close()
                return
            try:
                status, payload, headers = rest.handle(self.sim, req, self.ip)
            except Exception as exc:  # a simulator bug must show, not hang the client
                status, headers = 500, {}
                payload = {"code": -1000, "msg": f"simulator error: {exc!r}"}
            response = wire.http_response(
                status, orjson.dumps(payload), headers, keep_alive=req.keep_alive
            )
            held = self.sim.depth.take_held()
            if held:  # a depth answer held back (a fault): later requests wait behind it
                self.holding = True
                asyncio.get_running_loop().call_later(held, self._send, response, req.keep_alive)
                return
            self._send(response, req.keep_alive)

    def _send(self, response: bytes, keep_alive: bool) -> None:
        self.holding = False
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response)
        if not keep_alive:
            self.transport.close()
        elif self.buf:
            self.data_received(b"")  # requests that arrived while an answer was held

    def upgrade(self, req: wire.Request) -> None:
        assert self.transport is not None
        if req.path not in ("/stream", "/stream/"):
            raise wire.HttpError(404, f"{req.path} is not served; use /stream?streams=...")
        names = [s for s in req.query.get("streams", "").split("/") if s]
        try:
            check_streams(names)
        except StreamNameError as exc:
            raise wire.HttpError(400, str(exc)) from None
        if len(set(names)) > MAX_STREAMS:
            raise wire.HttpError(400, f"more than {MAX_STREAMS} streams on one connection")
        self.transport.write(wire.handshake_response(req))
        self.sim.stats["connections_total"] += 1
        self.session = WsSession(self.sim, self.transport, names)
        self.sim.sessions.add(self.session)
        if self.buf:  # frames that came in the same packet as the handshake
            rest_, self.buf = bytes(self.buf), bytearray()
            self.session.on_data(rest_)


def serve(
    config: SimConfig, host: str = "127.0.0.1", port: int = 0, sim: Simulator | None = None
) -> None:
    """Serve ``sim`` (default: the synthetic market of ``config``) until SIGTERM/SIGINT."""
    # Bind before start-up so `--port 0` can print the port the OS chose.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    try:
        asyncio.run(
            _main(
                sim or Simulator(config), sock, f"ws://{shown}:{bound}", f"http://{shown}:{bound}"
            )
        )
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        sys.stdout.flush()


async def _main(sim: Simulator, sock: socket.socket, ws_url: str, rest_url: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SimProtocol(sim), sock=sock)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    clock = asyncio.create_task(sim.run())
    clock.add_done_callback(lambda _: stop.set())  # a crashed market clock ends the process
    print(f"listening on {ws_url} (rest {rest_url})", flush=True)
    await stop.wait()
    for session in list(sim.sessions):
        session.close(1001, "simulator stopping")
    server.close()
    if clock.done() and not clock.cancelled():
        clock.result()  # re-raise what killed it
    clock.cancel()
