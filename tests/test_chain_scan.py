"""chain (#14): the reader's fast path in C (``quant_core.native.chain.scan``) changes nothing the
reader reports.

Two references: (1) a model of ``scan`` written with ``format.decode_record``, held against the
C function on random buffers (valid records, damaged ones, any position and state); (2) the
reader itself with the C fast path switched off (every record through the Python slow path,
``format.decode_record``), held against the normal reader on random session logs written by the
real SessionWriter with every kind of damage: same records, batches, digests, state and errors.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import zstandard

from quant_core.native import chain
from quant_core.sessionlog import format as fmt
from quant_core.sessionlog import reader as reader_mod
from quant_core.sessionlog.format import Record, RecordKind
from quant_core.sessionlog.reader import SessionLogError, SessionReader, segment_files
from quant_resources.session_writer import SessionWriter

# --- scan against a model built on format.decode_record -----------------------------------


def model_scan(buf, pos, digest, expected, since, every, sealed, limit, times, mode):
    """What scan must do, in the reference's terms: take while the slow path would accept a
    data record without a word (mode: 'verify', 'batch' (ws only) or 'emit')."""
    out, recvs, taken, first, last, counts = [], [], 0, None, None, [0, 0, 0, 0]
    while not sealed and (limit == 0 or taken < limit) and since < every:
        try:
            rec, npos, nd = fmt.decode_record(buf, pos, digest)
        except (fmt.Incomplete, fmt.FormatError):
            break
        if rec.kind not in (1, 2, 3) or (mode == "batch" and rec.kind != 1):
            break
        if rec.seq != expected:
            break
        if mode == "batch":
            out.append(rec.payload)
            if times:
                recvs.append(rec.recv_ns)
        elif mode == "emit":
            out.append(rec)
        if taken == 0:
            first = rec.recv_ns
        last = rec.recv_ns
        counts[rec.kind] += 1
        taken += 1
        since += 1
        expected += 1
        pos, digest = npos, nd
    result = (pos, digest, taken, first, last, counts[1], counts[2], counts[3])
    return result, out, recvs


def c_scan(buf, pos, digest, expected, since, every, sealed, limit, times, mode):
    out = None if mode == "verify" else []
    recvs: list[int] = []
    result = chain.scan(
        buf, pos, digest, expected, since, every, sealed, limit, times, out, recvs,
        Record if mode == "emit" else None,
    )  # fmt: skip
    return result, out or [], recvs


def random_records(rng: random.Random, n: int, prev: bytes, seq0: int = 0) -> tuple[bytes, list]:
    """n records chained from prev, mostly ws with some rest/conn/checkpoint; -> (bytes, seqs)."""
    parts, starts = [], []
    digest, size = prev, 0
    for i in range(n):
        r = rng.random()
        kind = 1 if r < 0.75 else 2 if r < 0.85 else 3 if r < 0.95 else 4
        meta = rng.randbytes(rng.choice((0, 0, 3, 40))) if kind != 1 else b""
        payload = rng.randbytes(rng.choice((0, 1, 50, 103, 104, 200, 700)))
        enc, digest = fmt.encode_record(
            digest, kind, (seq0 + i) % 2**64, rng.randrange(-(2**63), 2**63), rng.randrange(2**32),
            meta, payload,
        )  # fmt: skip
        starts.append(size)
        parts.append(enc)
        size += len(enc)
    return b"".join(parts), starts


def damage(rng: random.Random, buf: bytes, starts: list[int]) -> bytes:
    what = rng.randrange(6)
    data = bytearray(buf)
    if what == 0 and data:  # a flipped bit anywhere
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    elif what == 1:  # truncated anywhere
        del data[rng.randrange(len(data) + 1) :]
    elif what == 2 and starts:  # an impossible or huge length field
        i = rng.choice(starts)
        data[i : i + 4] = rng.choice((0, 24, 25, 1 << 26, (1 << 26) + 1, 2**32 - 1)).to_bytes(
            4, "little"
        )
    elif what == 3 and starts:  # a meta_len past the body
        i = rng.choice(starts) + 4 + 21
        data[i : i + 4] = rng.choice((2**32 - 1, 1 << 20, 500)).to_bytes(4, "little")
    elif what == 4:  # garbage appended
        data += rng.randbytes(rng.randrange(40))
    return bytes(data)


@pytest.mark.parametrize("mode", ["verify", "batch", "emit"])
def test_scan_equals_its_model_on_random_damaged_buffers(mode: str) -> None:
    rng = random.Random(hash(mode) & 0xFFFF)
    for _ in range(400):
        prev = rng.randbytes(32)
        seq0 = rng.choice((0, 5, 2**63, 2**64 - 3))
        buf, starts = random_records(rng, rng.randrange(0, 12), prev, seq0)
        if rng.random() < 0.8:
            buf = damage(rng, buf, starts)
        pos = rng.choice([0, 0, 0, *starts, rng.randrange(len(buf) + 40)])
        args = (
            buf,
            pos,
            prev if rng.random() < 0.9 else rng.randbytes(32),
            seq0
            if pos == 0
            else rng.choice((seq0, seq0 + starts.index(pos)))
            if pos in starts
            else seq0,
            rng.choice((0, 0, 3, 9)),
            rng.choice((10, 10, 4, 1, 0, -5, 1 << 62)),
            rng.random() < 0.1,
            rng.choice((0, 0, 1, 2, 5)),
            rng.random() < 0.5,
            mode,
        )
        assert c_scan(*args) == model_scan(*args), args[1:]


def test_scan_never_reads_past_the_buffer() -> None:
    """A record cut anywhere, read from a slice of a larger buffer (bytes past the slice are
    valid data): scan takes only what the slice holds whole."""
    rng = random.Random(3)
    prev = bytes(32)
    full, _ = random_records(rng, 30, prev)
    view = memoryview(full)
    for cut in range(0, len(full) + 1, 7):
        for mode in ("verify", "batch", "emit"):
            args = (view[:cut], 0, prev, 0, 0, 1 << 40, False, 0, True, mode)
            got = c_scan(*args)
            assert got == model_scan(bytes(view[:cut]), *args[1:])
            assert got[0][0] <= cut


def test_scan_rejects_bad_arguments_clearly() -> None:
    with pytest.raises(ValueError, match="digest has 5 bytes"):
        chain.scan(b"", 0, b"12345", 0, 0, 10, False, 0, False, None, [], None)
    with pytest.raises(ValueError, match="pos=-1"):
        chain.scan(b"", -1, bytes(32), 0, 0, 10, False, 0, False, None, [], None)
    with pytest.raises(TypeError, match="record_type"):
        chain.scan(b"", 0, bytes(32), 0, 0, 10, False, 0, False, [], [], int)
    # a sequence number no record can carry takes nothing (the slow path names it)
    buf, _ = random_records(random.Random(1), 3, bytes(32))
    for expected in (-1, 2**64, 10**30):
        assert (
            chain.scan(buf, 0, bytes(32), expected, 0, 10, False, 0, False, None, [], None)[2] == 0
        )


def test_scan_fuzz_random_bytes_never_crashes() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        buf = rng.randbytes(rng.randrange(200))
        if rng.random() < 0.5 and len(buf) >= 4:  # a plausible length field
            buf = rng.randrange(25, 120).to_bytes(4, "little") + buf[4:]
        args = (buf, rng.randrange(len(buf) + 2), bytes(32), 0, 0, 5, False, 0, True)
        for mode in ("verify", "batch", "emit"):
            assert c_scan(*args, mode) == model_scan(*args, mode)


# --- the reader with and without the C fast path -------------------------------------------


def no_fast_path(buf, pos, digest, *rest):
    """scan that takes nothing: every record goes through the Python slow path."""
    return (pos, digest, 0, None, None, 0, 0, 0)


def write_session(root: Path, rng: random.Random, n: int, close: bool = True) -> Path:
    w = SessionWriter(
        root,
        "s",
        "binance",
        ["btcusdt@aggTrade"],
        ["BTCUSDT"],
        "test",
        start_ns=10**18,
        checkpoint_every=rng.choice((7, 40, 1000)),
        rotate_bytes=rng.choice((3000, 1 << 20)),
    )
    for i in range(n):
        r = rng.random()
        recv = 10**18 + i * 10**6
        if r < 0.05:
            w.append(RecordKind.REST, 2, recv, rng.randbytes(rng.randrange(300)), {"path": "/x"})
        elif r < 0.08:
            w.append(RecordKind.CONN, 1, recv, b"", {"event": "reconnect"})
        else:
            w.append(RecordKind.WS, 1, recv, rng.randbytes(rng.choice((0, 30, 90, 250))))
    if close:
        w.close(stop_exchange_ms=1234)
    else:
        w.sync()
    w.closed_segments(wait=True)
    return root / "s"


def unpack_raw(session: Path, target: Path) -> list[Path]:
    """The session's segments decompressed into target (no manifest): bytes to damage."""
    target.mkdir()
    out = []
    for seg in segment_files(session):
        data = seg.read_bytes()
        if seg.name.endswith(".zst"):
            data = zstandard.ZstdDecompressor().decompress(data)
        path = target / seg.name.removesuffix(".zst")
        path.write_bytes(data)
        out.append(path)
    return out


def rechain(raw: bytes, edit) -> bytes:
    """The segment's records, edited by edit(list of Records) -> list, chained afresh."""
    _, pos, digest = fmt.decode_header(raw)
    head = raw[:pos]
    hdigest, records = digest, []
    while pos < len(raw):
        rec, pos, digest = fmt.decode_record(raw, pos, digest)
        records.append(rec)
    parts, digest = [head], hdigest
    for rec in edit(records):
        enc, digest = fmt.encode_record(digest, *rec)
        parts.append(enc)
    return b"".join(parts)


def renumber(recs: list[Record]) -> list[Record]:
    """Consecutive seqs from the first one (after records were removed)."""
    return [r._replace(seq=recs[0].seq + k) for k, r in enumerate(recs)]


def outcome(path: Path, strict: bool, what: str, batch: int, times: bool):
    """Everything a reader run reports: its items, its state and its error, if any."""
    reader = SessionReader(path, strict=strict)
    items: list = []
    error = None
    try:
        if what == "records":
            for rec in reader.records(structural=True):
                items.append(tuple(rec))
        elif what == "batches":
            for item in reader.batches(batch, times):
                items.append((item[0], item[1], list(item[2]), list(item[3]) if times else None))
        else:
            reader.verify()
    except SessionLogError as exc:
        error = (str(exc), exc.record, exc.offset, exc.header)
    info = reader.info
    state = (
        info.records,
        info.digest,
        dict(info.counts),
        info.first_recv_ns,
        info.last_recv_ns,
        info.footer,
        info.torn_tail,
        [(s.path.name, s.records, s.final_digest, s.sealed, s.end_offset) for s in info.segments],
    )
    return items, state, error


def both(monkeypatch, path: Path, label: str = "", **kw):
    fast = outcome(path, **kw)
    with monkeypatch.context() as m:
        m.setattr(reader_mod, "scan", no_fast_path)
        slow = outcome(path, **kw)
    assert fast == slow, (label, kw)
    return fast


def damages(rng: random.Random, raw: bytes) -> list[tuple[str, bytes]]:
    """Damaged copies of a decoded segment: every kind the reader must name."""
    _, pos, digest = fmt.decode_header(raw)
    offsets = []
    while pos < len(raw):
        offsets.append(pos)
        _, pos, digest = fmt.decode_record(raw, pos, digest)
    out = [("intact", raw)]
    for _ in range(6):
        i = rng.randrange(len(raw))
        flipped = bytearray(raw)
        flipped[i] ^= 1 << rng.randrange(8)
        out.append((f"flip@{i}", bytes(flipped)))
    for _ in range(3):
        cut = rng.randrange(len(raw))
        out.append((f"cut@{cut}", raw[:cut]))
    out.append(("zero tail", raw + bytes(rng.randrange(1, 60))))
    out.append(("garbage tail", raw + rng.randbytes(rng.randrange(1, 60))))
    data_idx = lambda recs: [k for k, r in enumerate(recs) if r.kind <= 3]  # noqa: E731

    def wrong_seq(recs):
        k = rng.choice(data_idx(recs))
        recs[k] = recs[k]._replace(seq=recs[k].seq + rng.choice((1, -1, 5)))
        return recs

    def drop_checkpoints(recs):
        return renumber([r for r in recs if r.kind != RecordKind.CHECKPOINT or r.meta])

    def after_seal(recs):
        last = recs[-1]
        extra = Record(1, last.seq + 1, last.recv_ns, 1, b"", b"late")
        return [*recs, extra]

    def swap(recs):
        k = rng.choice(data_idx(recs)[:-1] or [0])
        recs[k], recs[k + 1] = recs[k + 1], recs[k]
        return recs

    for name, edit in (
        ("wrong seq", wrong_seq),
        ("checkpoints removed", drop_checkpoints),
        ("data after seal", after_seal),
        ("swapped", swap),
    ):
        out.append((name, rechain(raw, edit)))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_reader_with_c_fast_path_equals_the_python_slow_path(tmp_path, monkeypatch, seed) -> None:
    rng = random.Random(seed)
    session = write_session(tmp_path / "w", rng, rng.randrange(60, 400), close=seed % 3 != 2)
    # the real session as written (compressed segments and manifest)
    for strict in (True, False):
        for what in ("verify", "records", "batches"):
            both(monkeypatch, session, strict=strict, what=what, batch=rng.choice((1, 3, 64)),
                 times=rng.random() < 0.5)  # fmt: skip
    segs = unpack_raw(session, tmp_path / "raw")
    for target in rng.sample(segs, min(2, len(segs))):
        original = target.read_bytes()
        for name, data in damages(rng, original):
            target.write_bytes(data)
            for strict in (True, False):
                for what in ("verify", "records", "batches"):
                    both(monkeypatch, tmp_path / "raw", name, strict=strict, what=what,
                         batch=rng.choice((1, 2, 5, 4096)), times=rng.random() < 0.5)  # fmt: skip
            # a lone segment file too (it may start mid-session)
            both(monkeypatch, target, strict=False, what="batches", batch=7, times=True)
            both(monkeypatch, target, strict=True, what="records", batch=1, times=False)
        target.write_bytes(original)


def test_the_comparison_can_fail(tmp_path, monkeypatch) -> None:
    """The reader comparison above does see a fast path that takes a record it must not."""
    session = write_session(tmp_path / "w", random.Random(1), 50)
    segs = unpack_raw(session, tmp_path / "raw")
    raw = segs[0].read_bytes()
    segs[0].write_bytes(
        rechain(raw, lambda recs: renumber([r for r in recs if r.kind != 4 or r.meta]))
    )
    good = outcome(tmp_path / "raw", strict=True, what="verify", batch=1, times=False)

    def lax(buf, pos, digest, expected, since, every, *rest):  # ignores checkpoint spacing
        return chain.scan(buf, pos, digest, expected, 0, 1 << 40, *rest)

    with monkeypatch.context() as m:
        m.setattr(reader_mod, "scan", lax)
        bad = outcome(tmp_path / "raw", strict=True, what="verify", batch=1, times=False)
    assert good[2] is not None and "no checkpoint within" in good[2][0]
    assert good != bad
