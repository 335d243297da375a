"""A fragmented WebSocket message keeps its place among the bursts around it: a real server
(a raw asyncio TCP server speaking the WebSocket wire format) sends a burst of data frames, a
message in three fragments with a ping between them, and then, in the same write as the last
fragment, more data frames; the real ``BinanceStreamClient`` (burst reader) must queue every
message in the order sent. Before the burst reader reassembled fragments, websockets delivered
such a message through ``recv`` after the frames that followed it in the same read."""

from __future__ import annotations

import asyncio

from quant_dev.binance_sim import wire
from quant_resources.binance.stream import BinanceStreamClient, FrameBurst


def frame(first: int, payload: bytes) -> bytes:
    """A server frame (unmasked, under 126 bytes) with its first byte: FIN, RSV, opcode."""
    return bytes([first, len(payload)]) + payload


def message(i: int) -> bytes:
    return b'{"stream":"btcusdt@aggTrade","data":{"n":%d}}' % i


async def serve(sent: list[bytes], done: asyncio.Event):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        request = None
        while request is None:
            buf += await reader.read(4096)
            request, _ = wire.parse_request(buf)
        writer.write(wire.handshake_response(request))
        await asyncio.sleep(0.3)  # the client is reading in bursts by now
        first = [message(i) for i in range(20)]
        writer.write(b"".join(frame(0x81, m) for m in first))
        await writer.drain()
        await asyncio.sleep(0.1)
        whole = message(20)
        parts = [whole[:10], whole[10:25], whole[25:]]
        # First fragment (FIN clear, text), a ping, a continuation (FIN clear)...
        writer.write(frame(0x01, parts[0]) + frame(0x89, b"ping") + frame(0x00, parts[1]))
        await writer.drain()
        await asyncio.sleep(0.1)
        after = [message(i) for i in range(21, 40)]
        # ...and the last continuation with the next messages in one write: one socket read.
        writer.write(frame(0x80, parts[2]) + b"".join(frame(0x81, m) for m in after))
        await writer.drain()
        sent.extend([*first, whole, *after])
        await done.wait()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_a_fragmented_message_between_bursts_keeps_its_place() -> None:
    async def main() -> list[bytes]:
        sent: list[bytes] = []
        done = asyncio.Event()
        server = await serve(sent, done)
        port = server.sockets[0].getsockname()[1]
        queue: asyncio.Queue = asyncio.Queue()
        client = BinanceStreamClient(f"ws://127.0.0.1:{port}", ["btcusdt@aggTrade"], queue)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        got: list[bytes] = []
        kinds: set[type] = set()
        while len(got) < 40:
            item = await asyncio.wait_for(queue.get(), 20)
            kinds.add(type(item))
            got += item.frames if isinstance(item, FrameBurst) else [item.data]
        stop.set()
        done.set()
        await task
        server.close()
        assert got == sent
        assert kinds == {FrameBurst}, kinds  # every message came through the burst reader
        return got

    assert len(asyncio.run(main())) == 40


def test_a_broken_fragment_sequence_hands_the_rest_to_websockets_for_good() -> None:
    from tests.test_klive_burst_reader import reader, ws_frame

    conn = reader()
    stray = ws_frame(b"orphan", 0x0)  # a continuation with no message to continue
    conn.data_received(ws_frame(b"a") + stray + ws_frame(b"b"))
    conn.data_received(ws_frame(b"c"))
    assert conn.bursts == [[b"a"]]  # what came before it, in order
    # From the broken frame on, websockets gets everything whole (it refuses it and closes).
    assert conn.fed == [stray + ws_frame(b"b"), ws_frame(b"c")]
