"""Replay verification throughput: chain check + decode + aggregate over a session log, against
the live decoding path over the same raw frames without the log.

The session (``QUANT_BENCH_REPLAY_EVENTS`` frames, default 5,000,000: 70 % aggTrade, 30 %
bookTicker over four symbols) is generated once and cached in the temp directory. Replay
shards its segments over one worker process per core, each verifying a segment's chain and
decoding its frames, and applies them in order (``quant_core.replay``). The live
peer runs ``ReplayDriver.on_ws_many`` in bursts of 4,096 frames (batched decoding, trade
de-duplication, ``add_trades``: what ``quant live`` does with each burst it drains, after the
write-ahead append) over the same frames, generated burst by burst outside the timed part so
memory stays bounded: both sides process exactly the same events.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import zstandard

from benchmarks.report import Figure
from quant_core.replay import REPLAY_BATCH, ReplayDriver, replay
from quant_core.sessionlog.reader import SessionReader, segment_files
from quant_resources.session_writer import SessionWriter

EVENTS = int(os.environ.get("QUANT_BENCH_REPLAY_EVENTS", "5000000"))
CACHE = Path(tempfile.gettempdir()) / "quant-bench-replay-v1"
T0_MS = 1_723_127_400_000
SYMBOLS = [
    (b"BTCUSDT", 5_612_345),
    (b"ETHUSDT", 257_110),
    (b"SOLUSDT", 14_512),
    (b"BNBUSDT", 51_230),
]
_AGG = (
    b'{"stream":"%s@aggTrade","data":{"e":"aggTrade","E":%d,"s":"%s","a":%d,"p":"%d.%02d000000",'
    b'"q":"0.%08d","f":%d,"l":%d,"T":%d,"m":%s,"M":true}}'
)
_BOOK = (
    b'{"stream":"%s@bookTicker","data":{"u":%d,"s":"%s","b":"%d.%02d000000","B":"1.50000000",'
    b'"a":"%d.%02d000000","A":"0.75000000"}}'
)


def frames(n: int) -> Iterator[tuple[int, bytes]]:
    """Deterministic (recv_ns, frame) pairs: ~1.5 frames per exchange millisecond."""
    ids = [[1_000_000 * (k + 1), 5_000_000 * (k + 1), 9_000_000 * (k + 1)] for k in range(4)]
    for i in range(n):
        k = (i * 7) % 4
        symbol, base = SYMBOLS[k]
        lower = symbol.lower()
        t = T0_MS + i * 2 // 3
        cents = base + (i * 7919) % 997 - 498
        state = ids[k]
        if i % 10 < 7:
            a, f = state[0], state[1]
            last = f + (i % 3 == 0)
            state[0], state[1] = a + 1, last + 1
            frame = _AGG % (
                lower, t + 2, symbol, a, cents // 100, cents % 100, 1_000 + i % 90_000,
                f, last, t, b"true" if i % 2 else b"false",
            )  # fmt: skip
        else:
            state[2] += 1
            frame = _BOOK % (
                lower, state[2], symbol, (cents - 1) // 100, (cents - 1) % 100, cents // 100,
                cents % 100,
            )  # fmt: skip
        yield t * 1_000_000 + 3_000_000 + i % 1_000, frame


def session(n: int = EVENTS) -> Path:
    """The cached session of ``n`` frames (generated on first use)."""
    final = CACHE / f"bench-{n}"
    if (final / "session.json").exists() and b'"closed"' in (final / "session.json").read_bytes():
        return final
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=CACHE))
    writer = SessionWriter(
        work,
        final.name,
        "binance",
        [f"{s.decode().lower()}@{kind}" for s, _ in SYMBOLS for kind in ("aggTrade", "bookTicker")],
        [s.decode() for s, _ in SYMBOLS],
        "bench",
        start_ns=T0_MS * 1_000_000,
    )
    last_t = T0_MS
    for recv_ns, frame in frames(n):
        writer.append("ws", 1, recv_ns, frame)
        last_t = recv_ns // 1_000_000
    writer.close(last_t)
    shutil.rmtree(final, ignore_errors=True)
    (work / final.name).rename(final)
    shutil.rmtree(work, ignore_errors=True)
    return final


def _timed(work) -> float:
    start = time.perf_counter()
    items = work()
    return items / (time.perf_counter() - start)


def run() -> list[Figure]:
    path = session()

    def replayed() -> int:
        result = replay(path)
        assert result.summary["records"]["ws"] == EVENTS
        return EVENTS

    def live() -> float:
        """Events/s of what quant live does with each burst it drains from its queue (after
        the log append), over the session's frames; only the processing is timed."""
        pipeline = ReplayDriver(tuple(s.decode() for s, _ in SYMBOLS))
        source = (frame for _, frame in frames(EVENTS))
        spent = 0.0
        while burst := list(islice(source, REPLAY_BATCH)):
            start = time.perf_counter()
            pipeline.on_ws_many(burst)
            spent += time.perf_counter() - start
        start = time.perf_counter()
        pipeline.finish(None)
        return EVENTS / (spent + time.perf_counter() - start)

    def serial() -> int:
        result = replay(path, parallel=False)
        assert result.summary["records"]["ws"] == EVENTS
        return EVENTS

    def chain_only() -> int:
        return sum(1 for _ in SessionReader(path).records(structural=True))

    def decompress_only() -> int:
        dctx = zstandard.ZstdDecompressor()
        for seg in segment_files(path):
            with open(seg, "rb") as fh, dctx.stream_reader(fh) as reader:
                while reader.read(1 << 20):
                    pass
        return EVENTS

    append_n = min(EVENTS, 500_000)
    append_frames = [frame for _, frame in frames(append_n)]

    def append() -> int:
        root = Path(tempfile.mkdtemp(dir=CACHE))
        try:
            writer = SessionWriter(root, "append", "binance", [], [], "bench", start_ns=0)
            records = [(1, i, frame) for i, frame in enumerate(append_frames)]
            for pos in range(0, append_n, REPLAY_BATCH):
                writer.append_many("ws", records[pos : pos + REPLAY_BATCH])
            writer.sync()
            return append_n
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def plain_write() -> int:
        root = Path(tempfile.mkdtemp(dir=CACHE))
        try:
            with open(root / "plain", "wb", buffering=1 << 20) as fh:
                for frame in append_frames:
                    fh.write(frame)
                fh.flush()
                os.fsync(fh.fileno())
            return append_n
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return [
        Figure(
            name=f"replay verification (chain + decode + aggregate), {EVENTS:,} events",
            unit="events/s",
            ours=_timed(replayed),
            peer_name="live decode path (batched decode + dedup + aggregator), no log",
            peer=live(),
            goal=">= 1,000,000 events/s and replay at least as fast as live decoding",
        ),
        Figure(
            name="replay verification, sharded vs serial (segments over worker processes)",
            unit="events/s",
            ours=_timed(replayed),
            peer_name="the same replay verifying in its own process",
            peer=_timed(serial),
            goal="informational (what the worker processes buy on this machine's cores)",
        ),
        Figure(
            name="session log chain verification only (BLAKE2b chain, zstd)",
            unit="records/s",
            ours=_timed(chain_only),
            peer_name="zstd decompression only",
            peer=_timed(decompress_only),
            goal="informational (cost of the chain check)",
        ),
        Figure(
            name="session log append_many (write-ahead, batched fsync, bursts of 4096)",
            unit="records/s",
            ours=_timed(append),
            peer_name="buffered file.write of the raw frames",
            peer=_timed(plain_write),
            goal="informational (per-frame cost on the live path)",
        ),
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure.as_dict())
