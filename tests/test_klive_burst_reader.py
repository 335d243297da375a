"""The burst reader of ``quant live`` (``BurstConnection``) hands every whole data frame of a
socket read over at once, in order, whatever the read boundaries, and gives websockets every
other frame whole and in its place: pings, pongs, close, fragments. (End to end, every live
test reads the simulator through it.)"""

from __future__ import annotations

import random
import struct
from types import SimpleNamespace

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from quant_resources.binance.stream import BurstConnection


def ws_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return bytes([first, n]) + payload
    if n < 1 << 16:
        return bytes([first, 126]) + struct.pack(">H", n) + payload
    return bytes([first, 127]) + struct.pack(">Q", n) + payload


class Websockets(ClientConnection):
    """Stands where websockets' own parser is (next in the MRO): records what it is fed."""

    def data_received(self, data: bytes) -> None:
        self.fed.append(data)


class Reader(BurstConnection, Websockets):
    pass


def reader() -> Reader:
    conn = Reader.__new__(Reader)  # no socket: only the byte handling is under test
    conn.fed, conn.bursts = [], []
    conn._bursting, conn._pending = True, bytearray()
    conn.protocol = SimpleNamespace(state=State.OPEN)  # the handshake is done
    conn.on_burst = lambda frames, recv_ns: conn.bursts.append(frames)
    return conn


def test_frames_survive_every_split_and_control_frames_go_to_websockets() -> None:
    rng = random.Random(7)
    sizes = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000, *(rng.randrange(300) for _ in range(40))]
    data_frames = [bytes([65 + i % 26]) * n for i, n in enumerate(sizes)]
    ping, pong = ws_frame(b"1", 0x9), ws_frame(b"2", 0xA)
    fragment = ws_frame(b"part", 0x1, fin=False) + ws_frame(b"end", 0x80)
    stream, expected_fed = b"", []
    for i, payload in enumerate(data_frames):
        stream += ws_frame(payload, 0x2 if i % 5 == 0 else 0x1)
        if i == 3:
            stream += ping
            expected_fed.append(ping)
        if i == 9:  # live3: a fragmented message is reassembled in its place, with a ping inside
            stream += fragment[:6] + ping + fragment[6:]
            expected_fed.append(ping)
    stream += pong
    expected_fed.append(pong)
    for split in (1, 2, 3, 7, 1000, 65_536, len(stream)):
        conn = reader()
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, split)
            conn.data_received(stream[pos : pos + step])
            pos += step
        messages = [*data_frames[:10], b"partend", *data_frames[10:]]  # live3
        assert [f for burst in conn.bursts for f in burst] == messages, split
        assert conn.fed == expected_fed, split
        assert not conn._pending  # nothing left over at a frame boundary


def test_a_data_frame_before_a_ping_is_handed_over_first() -> None:
    conn = reader()
    order = []
    conn.on_burst = lambda frames, recv_ns: order.append(("burst", frames))
    conn.fed = type("Fed", (list,), {"append": lambda self, d: order.append(("ws", d))})()
    conn.data_received(ws_frame(b"a") + ws_frame(b"1", 0x9) + ws_frame(b"b"))
    assert order == [("burst", [b"a"]), ("ws", ws_frame(b"1", 0x9)), ("burst", [b"b"])]


def test_a_closing_connection_hands_everything_to_websockets() -> None:
    conn = reader()
    conn.data_received(ws_frame(b"a") + ws_frame(b"bc")[:2])  # a whole frame, then a partial
    conn.protocol.state = State.CLOSING
    conn.data_received(ws_frame(b"bc")[2:] + ws_frame(b"d"))
    assert conn.bursts == [[b"a"]]
    assert conn.fed == [ws_frame(b"bc") + ws_frame(b"d")]  # the partial frame first, whole
