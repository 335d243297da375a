"""The simulator drops a client as a slow reader only when it has not taken what was sent
before, never for the size of the simulator's own publication.

Seen at 50,000 msgs/s offered on a loaded machine: the simulator fell behind, caught up a
second's worth in one tick (about 7.5 MB, near the 8 MiB limit), counted its own burst as the
client's backlog and dropped ``quant live`` twice in a 20 s run (``slow_reader_drops`` 2,
``connections_total`` 2), so most of the run came from REST repair. The transport here is a
stand-in that keeps what is written (its buffer is what the client has not read)."""

from __future__ import annotations

from quant_dev.binance_sim.server import SimConfig, Simulator
from quant_dev.binance_sim.ws import WsSession


class BufferingTransport:
    """A transport whose client reads only when told to (``read_all``)."""

    def __init__(self) -> None:
        self.buffer = 0
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.buffer += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffer

    def read_all(self) -> None:
        self.buffer = 0

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True


def test_a_burst_larger_than_the_limit_to_a_reader_that_keeps_up_is_sent() -> None:
    sim = Simulator(SimConfig(max_send_buffer=1000))
    transport = BufferingTransport()
    session = WsSession(sim, transport, ["btcusdt@aggTrade"])
    session.write([b"x" * 5000])  # one tick's publication, five times the limit
    assert not transport.aborted and sim.stats["slow_reader_drops"] == 0
    transport.read_all()  # the client took it
    session.write([b"x" * 5000])
    assert not transport.aborted
    # It did not take that one: the next write finds more than the limit waiting.
    session.write([b"x" * 10])
    assert transport.aborted and sim.stats["slow_reader_drops"] == 1
