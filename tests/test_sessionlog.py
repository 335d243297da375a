"""Session log format v1: encoding, rotation, durability, crash recovery, and that every kind
of damage is reported with the file, the record index and the byte offset."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.sessionlog import format as fmt
from quant_core.sessionlog.format import RecordKind, SegmentHeader
from quant_core.sessionlog.reader import SessionLogError, SessionReader, segment_files
from quant_resources import session_writer
from quant_resources.session_writer import SessionWriter, recover

ROOT = Path(__file__).resolve().parents[1]


def make_session(
    root: Path, n: int = 300, session_id: str = "s1", close: bool = True, **kwargs
) -> tuple[Path, list[tuple[int, int, int, bytes, dict | None]]]:
    """n data records of every kind; -> (session dir, what was appended)."""
    kwargs.setdefault("checkpoint_every", 50)
    w = SessionWriter(
        root,
        session_id,
        "binance",
        ["btcusdt@aggTrade"],
        ["BTCUSDT"],
        "test",
        start_ns=10**18,
        **kwargs,
    )
    appended = []
    for i in range(n):
        if i % 97 == 5:
            item = (RecordKind.REST, 2, 10**18 + i * 10**6, b"[]", {"path": "/x", "n": i})
        elif i % 61 == 7:
            item = (RecordKind.CONN, 1, 10**18 + i * 10**6, b"", {"event": "reconnect"})
        else:
            item = (
                RecordKind.WS,
                1,
                10**18 + i * 10**6,
                b'{"i":%d,"pad":"%s"}' % (i, b"x" * 40),
                None,
            )
        assert w.append(*item) >= i
        appended.append(item)
    if close:
        w.close(stop_exchange_ms=1234)
    return root / session_id, appended


def data_of(records) -> list[tuple[int, int, int, bytes, dict | None]]:
    return [
        (r.kind, r.conn_id, r.recv_ns, bytes(r.payload), r.meta_dict() or None) for r in records
    ]


def raw_segment(path: Path) -> bytes:
    data = path.read_bytes()
    return zstandard.ZstdDecompressor().decompress(data) if path.name.endswith(".zst") else data


def record_offsets(raw: bytes) -> list[int]:
    """Byte offset of every record in a decoded segment (walking the valid chain)."""
    _, pos, digest = fmt.decode_header(raw)
    offsets = []
    while pos < len(raw):
        offsets.append(pos)
        _, pos, digest = fmt.decode_record(raw, pos, digest)
    return offsets


def first_seq(raw: bytes) -> int:
    return fmt.decode_header(raw)[0].first_seq


def expect_error(path: Path, **kwargs) -> SessionLogError:
    with pytest.raises(SessionLogError) as info:
        SessionReader(path, **kwargs).verify()
    with pytest.raises(SessionLogError) as batched:  # the batched reader checks the same
        for _ in SessionReader(path, **kwargs).batches(7):
            pass
    assert str(batched.value) == str(info.value)
    return info.value


# --- format ---------------------------------------------------------------------------------


def test_header_round_trip() -> None:
    header = SegmentHeader("abc", "binance", ("a@b",), ("BTCUSDT",), 5, "1.0", 3, 77, b"\x01" * 32)
    raw, digest = fmt.encode_header(header)
    decoded, size, digest2 = fmt.decode_header(raw + b"tail")
    assert decoded == header
    assert size == len(raw)
    assert digest == digest2 == fmt.chain(header.prev_digest, raw[:-4])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(RecordKind)),
            st.integers(0, 2**32 - 1),
            st.integers(-(2**63), 2**63 - 1),
            st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), max_size=3),
            st.binary(max_size=300),
        ),
        max_size=20,
    )
)
def test_records_round_trip_and_chain(items) -> None:
    prev = digest = b"\x07" * 32
    buf = b""
    for seq, (kind, conn, recv, meta, payload) in enumerate(items):
        raw, digest = fmt.encode_record(
            digest, kind, seq, recv, conn, fmt.canonical_json(meta) if meta else b"", payload
        )
        buf += raw
    pos, digest = 0, prev
    for seq, (kind, conn, recv, meta, payload) in enumerate(items):
        start = pos
        rec, pos, new = fmt.decode_record(buf, pos, digest)
        assert new == fmt.chain(digest, buf[start : pos - fmt.TAG_SIZE])
        digest = new
        assert (rec.kind, rec.seq, rec.recv_ns, rec.conn_id, rec.payload) == (
            kind,
            seq,
            recv,
            conn,
            payload,
        )
        assert rec.meta_dict() == meta
    assert pos == len(buf)
    with pytest.raises(fmt.Incomplete):
        fmt.decode_record(buf, pos, digest)


def test_writer_round_trip_counts_and_footer(tmp_path: Path) -> None:
    session, appended = make_session(tmp_path)
    reader = SessionReader(session)
    assert data_of(reader) == appended
    info = reader.info
    assert info.footer is not None and info.footer.clean
    assert info.footer.stop_exchange_ms == 1234
    assert info.counts["ws"] + info.counts["rest"] + info.counts["conn"] == len(appended)
    assert info.counts["checkpoint"] >= len(appended) // 50
    assert info.first_recv_ns == appended[0][2] and info.last_recv_ns == appended[-1][2]
    manifest = orjson.loads((session / "session.json").read_bytes())
    assert manifest["state"] == "closed"
    assert manifest["final_digest"] == info.final_digest
    # structural records are interleaved but never returned to a consumer of data
    kinds = [r.kind for r in SessionReader(session).records(structural=True)]
    assert kinds[-1] == RecordKind.FOOTER and RecordKind.CHECKPOINT in kinds


def test_batches_hold_the_records_in_order(tmp_path: Path) -> None:
    session, _ = make_session(tmp_path, n=300, rotate_bytes=3000)
    assert len(segment_files(session)) > 3
    records = [(r.kind, r.meta, r.payload) for r in SessionReader(session).records()]
    assert {kind for kind, _, _ in records} == {1, 2, 3}
    for size in (1, 7, 4096):
        flat = []
        for kind, meta, payloads in SessionReader(session).batches(size):
            assert 1 <= len(payloads) <= size and (kind == RecordKind.WS or len(payloads) == 1)
            flat += [(kind, meta, payload) for payload in payloads]
        assert flat == records, size
    with pytest.raises(ValueError, match="batch=0"):
        SessionReader(session).batches(0)


def test_append_rejects_structural_kinds(tmp_path: Path) -> None:
    w = SessionWriter(tmp_path, "s", "binance", [], [], "t")
    for kind in (RecordKind.CHECKPOINT, RecordKind.FOOTER, "footer", 9):
        with pytest.raises(ValueError):
            w.append(kind, 0, 0, b"")
    with pytest.raises(FileExistsError):
        SessionWriter(tmp_path, "s", "binance", [], [], "t")
    with pytest.raises(ValueError):
        SessionWriter(tmp_path, "../escape", "binance", [], [], "t")


# --- rotation -------------------------------------------------------------------------------


def test_rotation_by_size_keeps_the_chain_across_segments(tmp_path: Path) -> None:
    w = SessionWriter(
        tmp_path, "rot", "binance", [], [], "t", rotate_bytes=4000, checkpoint_every=20
    )
    appended = [(RecordKind.WS, 1, i, b"frame-%05d" % i + b"." * 50, None) for i in range(400)]
    for item in appended:
        w.append(*item)
    closed = w.closed_segments(wait=True)  # compressed in the background meanwhile
    assert len(closed) >= 5  # segments became uploadable while the session ran
    assert all(p.name.endswith(".qlog.zst") and p.exists() for p in closed)
    result = w.close(None)
    files = segment_files(tmp_path / "rot")
    assert files == result.segments and len(files) >= 6
    digest = fmt.ZERO_DIGEST
    next_seq = 0
    for index, path in enumerate(files, start=1):
        header = fmt.decode_header(raw_segment(path))[0]
        assert (header.segment_index, header.first_seq, header.prev_digest) == (
            index,
            next_seq,
            digest,
        )
        lone = SessionReader(path, strict=False)  # each segment verifies on its own
        lone.verify()
        digest, next_seq = lone.info.digest, lone.info.records
    reader = SessionReader(tmp_path / "rot")
    assert data_of(reader) == appended
    assert reader.info.final_digest == result.final_digest == digest.hex()


def test_rotation_by_receive_time(tmp_path: Path) -> None:
    w = SessionWriter(tmp_path, "t", "binance", [], [], "t", rotate_seconds=60)
    for i in range(10):  # one record every 25 s of receive time
        w.append("ws", 1, i * 25 * 10**9, b"x")
    w.close(None)
    starts = [fmt.decode_header(raw_segment(p))[0].first_seq for p in segment_files(tmp_path / "t")]
    # the record 75 s after the segment's first (at 0 s) rotates: 4 records + sealing checkpoint
    assert starts == [0, 5, 10]
    assert len(list(SessionReader(tmp_path / "t"))) == 10


# --- durability -----------------------------------------------------------------------------


def test_fsync_is_batched_and_close_loses_nothing(tmp_path: Path, monkeypatch) -> None:
    calls = []
    real = os.fsync
    monkeypatch.setattr(session_writer.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    clock = [0.0]
    w = SessionWriter(
        tmp_path,
        "f",
        "binance",
        [],
        [],
        "t",
        fsync_every_records=1000,
        fsync_every_seconds=5.0,
        monotonic=lambda: clock[0],
    )
    calls.clear()
    for i in range(2500):
        w.append("ws", 1, i, b"%d" % i)
    assert len(calls) == 2  # after records 1000 and 2000, not per record
    clock[0] = 6.0
    w.append("ws", 1, 2500, b"late")
    assert len(calls) == 3  # the time bound also triggers
    w.close(None)
    assert [r.payload for r in SessionReader(tmp_path / "f")][-2:] == [b"2499", b"late"]
    assert len(list(SessionReader(tmp_path / "f"))) == 2501


def test_an_idle_writer_still_fsyncs_what_it_was_given(tmp_path: Path, monkeypatch) -> None:
    """A quiet stream makes no append that would trigger the timed fsync: ``idle_sync`` (the
    live ticker calls it) makes the last records durable within ``fsync_every_seconds``."""
    calls = []
    real = os.fsync
    monkeypatch.setattr(session_writer.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    clock = [0.0]
    w = SessionWriter(
        tmp_path, "i", "binance", [], [], "t", fsync_every_seconds=1.0, monotonic=lambda: clock[0]
    )
    assert not w.idle_sync()  # nothing waits
    w.append("ws", 1, 1, b"last frame before a quiet spell")
    calls.clear()
    clock[0] = 0.5
    assert not w.idle_sync() and w.unsynced == 1 and not calls
    clock[0] = 1.0
    assert w.idle_sync() and w.unsynced == 0 and len(calls) == 1
    clock[0] = 5.0
    assert not w.idle_sync() and len(calls) == 1  # durable already: no fsync for nothing
    w.close(None)


CRASH = textwrap.dedent(
    """
    import os, sys
    from quant_resources.session_writer import SessionWriter
    w = SessionWriter(sys.argv[1], "crash", "binance", [], [], "t", fsync_every_records=10**9,
                      fsync_every_seconds=10**9, checkpoint_every=100)
    for i in range(int(sys.argv[2])):
        w.append("ws", 1, i, b"synced-%d" % i)
    w.sync()
    for i in range(int(sys.argv[3])):
        w.append("ws", 1, 10**6 + i, b"unsynced-%d" % i + b"." * 200)
    os._exit(0)  # a crash: no close, no flush of the user-space buffer
    """
)


def crash(root: Path, synced: int, unsynced: int) -> Path:
    subprocess.run(
        [sys.executable, "-c", CRASH, str(root), str(synced), str(unsynced)],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return root / "crash"


def test_crash_then_recover_keeps_everything_synced(tmp_path: Path) -> None:
    session = crash(tmp_path, 250, 10)
    with pytest.raises(SessionLogError, match="unclosed"):
        SessionReader(session).verify()
    result = recover(session, stop_exchange_ms=99)
    assert not result.already_closed
    reader = SessionReader(session)
    payloads = [r.payload for r in reader]
    assert payloads == [b"synced-%d" % i for i in range(250)]
    assert reader.info.footer.clean is False and reader.info.footer.stop_exchange_ms == 99
    assert orjson.loads((session / "session.json").read_bytes())["state"] == "recovered"
    again = recover(session)
    assert again.already_closed and again.final_digest == result.final_digest


def test_torn_tail_is_cut_and_nothing_before_it_is_lost(tmp_path: Path) -> None:
    # 6000 unsynced records overflow the 1 MiB buffer: part of them reached the file, and the
    # buffer flush ended wherever it ended; then we tear the last record on purpose.
    session = crash(tmp_path, 100, 6000)
    active = segment_files(session)[-1]
    assert active.name.endswith(".qlog")
    offsets = record_offsets_tolerant(active.read_bytes())
    last = offsets[-1]
    with open(active, "r+b") as fh:
        fh.truncate(last + 20)  # a record cut in the middle: the torn tail
    err = expect_error(session)
    assert err.record is not None and "truncated" in str(err)
    result = recover(session)
    assert result.cut_bytes == 20
    payloads = [r.payload for r in SessionReader(session)]
    assert payloads[:100] == [b"synced-%d" % i for i in range(100)]
    kept = len(payloads) - 100
    assert kept > 0
    assert payloads[100:] == [b"unsynced-%d" % i + b"." * 200 for i in range(kept)]


def record_offsets_tolerant(raw: bytes) -> list[int]:
    _, pos, digest = fmt.decode_header(raw)
    offsets = []
    while True:
        try:
            _, nxt, digest = fmt.decode_record(raw, pos, digest)
        except (fmt.Incomplete, fmt.FormatError):
            return offsets
        offsets.append(pos)
        pos = nxt


def test_zero_filled_tail_is_a_torn_tail(tmp_path: Path) -> None:
    session = crash(tmp_path, 120, 0)
    active = segment_files(session)[-1]
    with open(active, "ab") as fh:
        fh.write(bytes(4096))  # blocks allocated but never written
    result = recover(session)
    assert result.cut_bytes == 4096
    assert len(list(SessionReader(session))) == 120


def test_corruption_before_intact_data_is_not_a_torn_tail(tmp_path: Path) -> None:
    session = crash(tmp_path, 120, 0)
    active = segment_files(session)[-1]
    raw = bytearray(active.read_bytes())
    offset = record_offsets(bytes(raw))[10]
    raw[offset + 40] ^= 0x01
    active.write_bytes(bytes(raw))
    with pytest.raises(SessionLogError) as info:
        recover(session)
    assert info.value.record == 10 and info.value.offset == offset
    assert active.read_bytes() == bytes(raw)  # recover refused and changed nothing


def test_recover_after_crash_during_rotation(tmp_path: Path) -> None:
    w = SessionWriter(tmp_path, "r", "binance", [], [], "t", rotate_bytes=2000)
    for i in range(100):
        w.append("ws", 1, i, b"p%03d" % i + b"-" * 40)
    w.sync()
    session = tmp_path / "r"
    active = segment_files(session)[-1]
    # the crash hit after the .zst of the last closed segment was renamed, before the raw
    # file was deleted, and before the new active segment was written at all
    closed = w.closed_segments(wait=True)[-1]
    closed.with_name(closed.name.removesuffix(".zst")).write_bytes(raw_segment(closed))
    (session / (closed.name + ".tmp")).write_bytes(b"partial")
    w._fh.close()
    w.lock.release()  # the writer "died": the kernel drops a dead process's lock
    active.write_bytes(b"QLOG")  # torn header: the segment holds no records
    recover(session)
    assert [r.payload for r in SessionReader(session)] == [
        b"p%03d" % i + b"-" * 40 for i in range(len(list(SessionReader(session))))
    ]
    assert not list(session.glob("*.tmp"))
    assert all(p.name.endswith(".zst") for p in segment_files(session))


# --- damage is named: file, record index, byte offset ----------------------------------------


@pytest.fixture
def lone(tmp_path: Path) -> tuple[Path, bytes, list[int]]:
    """A closed one-segment session, decoded to a plain .qlog file for byte surgery."""
    session, _ = make_session(tmp_path / "src", n=120)
    (seg,) = segment_files(session)
    raw = raw_segment(seg)
    path = tmp_path / "seg-000001.qlog"
    path.write_bytes(raw)
    SessionReader(path).verify()  # intact as a lone file
    return path, raw, record_offsets(raw)


def frames(raw: bytes, offsets: list[int]) -> list[bytes]:
    ends = [*offsets[1:], len(raw)]
    return [raw[a:b] for a, b in zip(offsets, ends, strict=True)]


def test_truncated_segment(lone) -> None:
    path, raw, offsets = lone
    path.write_bytes(raw[: offsets[60] + 17])
    err = expect_error(path)
    assert (err.file, err.record, err.offset) == (str(path), 60, offsets[60])
    assert "truncated" in str(err) and str(path) in str(err)
    path.write_bytes(raw[: offsets[60]])  # cut exactly between records: no sealing record
    err = expect_error(path)
    assert err.record == 60 and "without a sealing checkpoint or footer" in str(err)


def test_reordered_records(lone) -> None:
    path, raw, offsets = lone
    fr = frames(raw, offsets)
    swapped = [*fr[:30], fr[31], fr[30], *fr[32:]]
    path.write_bytes(raw[: offsets[0]] + b"".join(swapped))
    err = expect_error(path)
    assert (err.record, err.offset) == (30, offsets[30])
    assert "sequence 31 where 30 was expected" in str(err)


def test_duplicated_record(lone) -> None:
    path, raw, offsets = lone
    fr = frames(raw, offsets)
    path.write_bytes(raw[: offsets[0]] + b"".join([*fr[:41], fr[40], *fr[41:]]))
    err = expect_error(path)
    assert (err.record, err.offset) == (41, offsets[41])
    assert "duplicated" in str(err)


def rechain(raw: bytes, order: list[int]) -> bytes:
    """Re-encode the records in ``order`` with a valid chain (what a careless tool or a
    deliberate edit would produce): only the sequence numbers can tell."""
    header, pos, digest = fmt.decode_header(raw)
    records = []
    while pos < len(raw):
        rec, pos, digest = fmt.decode_record(raw, pos, digest)
        records.append(rec)
    _, digest = fmt.encode_header(header)
    out = raw[: fmt.decode_header(raw)[1]]
    for i in order:
        r = records[i]
        enc, digest = fmt.encode_record(
            digest, r.kind, r.seq, r.recv_ns, r.conn_id, r.meta, r.payload
        )
        out += enc
    return out


def test_rechained_reorder_duplicate_and_gap(lone) -> None:
    path, raw, offsets = lone
    n = len(offsets)
    cases = {
        "reordered": ([*range(20), 21, 20, *range(22, n)], 20, "sequence 21 where 20"),
        "duplicated": ([*range(21), 20, *range(21, n)], 21, "duplicated or reordered"),
        "missing": ([*range(20), *range(21, n)], 20, "sequence gap"),
    }
    for name, (order, index, message) in cases.items():
        path.write_bytes(rechain(raw, order))
        err = expect_error(path)
        assert (err.record, err.offset) == (index, offsets[index]), name
        assert message in str(err), name


def test_rechained_edit_is_caught_by_the_next_checkpoint(lone) -> None:
    """An edit whose author recomputed every record tag still breaks the full digest kept by
    the next checkpoint."""
    path, raw, _ = lone
    _, pos, original = fmt.decode_header(raw)
    out, forged = raw[:pos], original
    kinds = []
    while pos < len(raw):
        rec, pos, original = fmt.decode_record(raw, pos, original)
        payload = b'{"i":3,"pad":"forged"}' if len(kinds) == 3 else rec.payload
        enc, forged = fmt.encode_record(
            forged, rec.kind, rec.seq, rec.recv_ns, rec.conn_id, rec.meta, payload
        )
        out += enc
        kinds.append(rec.kind)
    path.write_bytes(out)
    err = expect_error(path)
    assert err.record == kinds.index(RecordKind.CHECKPOINT)
    assert "checkpoint" in str(err) and "altered" in str(err)


def test_bit_flips_name_the_record(lone) -> None:
    path, raw, offsets = lone
    ends = [*offsets[1:], len(raw)]
    for index in (0, 1, 57, len(offsets) - 1):
        for where in (0, 5, 20, ends[index] - offsets[index] - 1):
            damaged = bytearray(raw)
            damaged[offsets[index] + where] ^= 0x10
            path.write_bytes(bytes(damaged))
            err = expect_error(path)
            assert err.record == index, (index, where, str(err))
            assert err.offset == offsets[index]
    header_end = offsets[0]
    for where in range(0, header_end, 7):
        damaged = bytearray(raw)
        damaged[where] ^= 0x01
        path.write_bytes(bytes(damaged))
        err = expect_error(path)
        assert err.header and err.offset is not None, where


def test_wrong_version(lone) -> None:
    path, raw, _ = lone
    path.write_bytes(raw[:8] + (2).to_bytes(2, "little") + raw[10:])
    err = expect_error(path)
    assert "format version 2 is not supported" in str(err) and err.offset == 8


@pytest.mark.parametrize(
    "content",
    [b"", b"PAR1\x00\x00", b"hello world, this is a text file\n" * 10, b"QLO"],
)
def test_not_a_session_log(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "seg-000001.qlog"
    path.write_bytes(content)
    err = expect_error(path)
    assert str(path) in str(err)
    assert "not a session log" in str(err) or "truncated" in str(err)
    with pytest.raises(SessionLogError, match="no segment files"):
        SessionReader(tmp_path / "..").verify()


def test_compressed_segment_damage(tmp_path: Path) -> None:
    session, _ = make_session(tmp_path, n=200)
    (seg,) = segment_files(session)
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) // 2])
    err = expect_error(session)
    assert err.file == str(seg) and err.record is not None and err.offset is not None
    seg.write_bytes(data + b"junk")
    err = expect_error(session)
    assert "after the end of the zstd frame" in str(err)


def test_missing_or_extra_segments(tmp_path: Path) -> None:
    w = SessionWriter(tmp_path, "m", "binance", [], [], "t", rotate_bytes=1500)
    for i in range(100):
        w.append("ws", 1, i, b"q" * 50)
    w.close(None)
    files = segment_files(tmp_path / "m")
    assert len(files) >= 4
    files[2].rename(tmp_path / files[2].name)  # remove a middle segment
    err = expect_error(tmp_path / "m")
    assert err.file == str(files[3]) and err.header and "missing or reordered segment" in str(err)
    (tmp_path / files[2].name).rename(files[2])
    files[0].rename(tmp_path / files[0].name)  # remove the first one
    err = expect_error(tmp_path / "m")
    assert "earlier segments are missing" in str(err)
    (tmp_path / files[0].name).rename(files[0])
    files[-1].rename(tmp_path / files[-1].name)  # remove the last one (with the footer)
    err = expect_error(tmp_path / "m")
    assert "no footer" in str(err)
    (tmp_path / files[-1].name).rename(files[-1])
    SessionReader(tmp_path / "m").verify()


def test_manifest_pins_compressed_bytes(tmp_path: Path) -> None:
    session, _ = make_session(tmp_path, n=50)
    (seg,) = segment_files(session)
    # a different but valid compression of the same bytes: every record verifies
    seg.write_bytes(zstandard.ZstdCompressor(level=19).compress(raw_segment(seg)))
    err = expect_error(session)
    assert "sha256" in str(err) and err.record is not None and err.offset is not None


@pytest.mark.parametrize("field", ["sha256", "file"])
def test_a_manifest_entry_without_a_field_is_named_not_a_key_error(tmp_path, field) -> None:
    session, _ = make_session(tmp_path, n=50)
    manifest = session / "session.json"
    doc = orjson.loads(manifest.read_bytes())
    (seg,) = segment_files(session)
    del doc["segments"][0][field]
    manifest.write_bytes(orjson.dumps(doc))
    err = expect_error(session)
    assert err.file == str(manifest)
    assert f"segment entry 0{f' ({seg.name})' if field == 'sha256' else ''} has no {field!r}" in (
        str(err)
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=120), min_size=1, max_size=300),
    st.lists(st.integers(1, 80), min_size=1, max_size=10),
    st.sampled_from([400, 3000, 1 << 20]),
    st.sampled_from([0.00005, 3600.0]),
    st.sampled_from([1, 7, 1000]),
)
def test_append_many_writes_what_append_writes(
    tmp_path_factory, payloads, sizes, rotate_bytes, rotate_seconds, checkpoint_every
) -> None:
    records = [(i % 3, 1_700_000_000_000_000_000 + i * 1_000, p) for i, p in enumerate(payloads)]
    dirs = []
    for batched in (False, True):
        root = tmp_path_factory.mktemp("many")
        w = SessionWriter(
            root, "m", "binance", ["btcusdt@trade"], ["BTCUSDT"], "t", start_ns=1,
            rotate_bytes=rotate_bytes, rotate_seconds=rotate_seconds,
            checkpoint_every=checkpoint_every, monotonic=lambda: 0.0,
        )  # fmt: skip
        if batched:
            pos = 0
            for size in [*sizes, len(records)]:
                w.append_many("ws", records[pos : pos + size])
                pos += size
        else:
            for conn_id, recv_ns, payload in records:
                w.append("ws", conn_id, recv_ns, payload)
        w.append("conn", 0, records[-1][1], b"", {"event": "x"})
        w.close(stop_exchange_ms=None)
        dirs.append(root / "m")
    one, many = ({p.name: p.read_bytes() for p in d.iterdir()} for d in dirs)
    assert one == many
    assert len(list(SessionReader(dirs[1]).records())) == len(records) + 1


def test_rotation_compresses_in_the_background_and_recover_finishes_it(tmp_path) -> None:
    from concurrent.futures import Future

    class Stalled:  # a compressor thread that never gets to run before the "crash"
        def submit(self, *args):
            return Future()

    w = SessionWriter(tmp_path, "bg", "binance", [], [], "t", rotate_bytes=600)
    w._compressor = Stalled()
    for i in range(40):
        w.append("ws", 1, 1_000 + i, b"x" * 60)
    w.sync()
    raw = sorted(p.name for p in (tmp_path / "bg").glob("seg-*.qlog"))
    assert len(raw) >= 3 and not list((tmp_path / "bg").glob("*.zst"))  # nothing waited for
    # crash here: sealed raw segments and the active one are on disk, no footer
    w.lock.release()  # as the kernel does when the writer dies
    result = recover(tmp_path / "bg")
    assert result.records >= 40 and not list((tmp_path / "bg").glob("seg-*.qlog"))
    info = SessionReader(tmp_path / "bg").verify()
    assert info.counts["ws"] == 40 and len(info.segments) == len(raw)
    manifest = orjson.loads((tmp_path / "bg" / "session.json").read_bytes())
    assert [s["file"] for s in manifest["segments"]] == [n + ".zst" for n in raw]


def test_background_compression_lists_segments_as_they_finish(tmp_path) -> None:
    w = SessionWriter(tmp_path, "bg", "binance", [], [], "t", rotate_bytes=600)
    for i in range(40):
        w.append("ws", 1, 1_000 + i, b"x" * 60)
    w._compressor.shutdown(wait=True)  # let the thread finish what it was given
    w.sync()  # lists finished segments in the manifest
    manifest = orjson.loads((tmp_path / "bg" / "session.json").read_bytes())
    assert manifest["state"] == "open" and len(manifest["segments"]) >= 3
    assert w.closed_segments() == [tmp_path / "bg" / s["file"] for s in manifest["segments"]]
