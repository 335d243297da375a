"""Write-ahead session log writer (format v1, docs/session-log.md) and crash recovery.

The live loop calls ``append`` for every frame before processing it, so the per-record cost is
one encode, one BLAKE2b call and a buffered write; ``fsync`` happens in batches (every
``fsync_every_records`` records or ``fsync_every_seconds``, whichever comes first). The active
segment is a plain append-only file, so whatever reached the disk before a crash is readable;
a segment is compressed to ``.qlog.zst`` when it is closed (on a rotation in a background
thread, so the live loop never waits for zstd; at ``close`` before it returns).

Not thread-safe: one writer per session, called from one thread. The writer holds the
session's lock (``session_lock``) from construction to ``close``: a second writer, or a
``recover``, on the same directory is refused while it lives.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zstandard

from quant_core.sessionlog.format import (
    BODY_FIELDS,
    DATA_KINDS,
    DEFAULT_ROTATE_BYTES,
    DIGEST_SIZE,
    FORMAT_NAME,
    FORMAT_VERSION,
    LEN_FIELD,
    MAX_BODY,
    SEGMENT_END_META,
    TAG_SIZE,
    ZERO_DIGEST,
    Footer,
    FormatError,
    RecordKind,
    SegmentHeader,
    canonical_json,
    checkpoint_payload,
    decode_header,
    empty_counts,
    encode_header,
    encode_record,
)
from quant_core.sessionlog.reader import (
    MANIFEST,
    SessionInfo,
    SessionLogError,
    SessionReader,
    read_manifest,
    segment_files,
    segment_name,
)
from quant_resources.session_lock import SessionLock

# The length and fixed fields of a record without meta in one pack (``encode_record`` packs
# them apart and joins them): append_many writes the same bytes at a fraction of the cost.
RECORD_HEAD = struct.Struct("<" + LEN_FIELD.format.lstrip("<") + BODY_FIELDS.format.lstrip("<"))

SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KINDS: dict[Any, RecordKind] = {
    **{k: k for k in DATA_KINDS},
    **{int(k): k for k in DATA_KINDS},
    **{k.name.lower(): k for k in DATA_KINDS},
}


def _fsync_dir(path: Path) -> None:
    # A rename or a new file is durable only once its directory entry is.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def compress_segment(raw: Path, level: int = 3) -> Path:
    """seg-N.qlog -> seg-N.qlog.zst (one zstd frame with content size and checksum).

    Written to a temp file, fsynced, renamed, and only then is the raw file removed: a crash at
    any point leaves either the raw segment or a complete compressed one (or both, which
    ``recover`` resolves). Only a writer holding the session's lock calls it.
    """
    final = raw.with_name(raw.name + ".zst")
    tmp = raw.with_name(raw.name + ".zst.tmp")
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    with open(raw, "rb") as src, open(tmp, "wb") as dst:
        cctx.copy_stream(src, dst, size=os.fstat(src.fileno()).st_size)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, final)
    _fsync_dir(raw.parent)
    raw.unlink()
    _fsync_dir(raw.parent)
    return final


def _compress_and_hash(raw: Path, level: int) -> tuple[Path, str]:
    final = compress_segment(raw, level)
    return final, _sha256(final)


@dataclass(frozen=True)
class ClosedSession:
    session_dir: Path
    segments: list[Path]
    records: int
    final_digest: str
    footer: Footer


class SessionWriter:
    """Append records to ``root_dir/session_id/``; see the module docstring."""

    def __init__(
        self,
        root_dir: Path | str,
        session_id: str,
        venue: str,
        streams: Iterable[str],
        symbols: Iterable[str],
        software_version: str,
        *,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
        rotate_seconds: float = 3600.0,
        fsync_every_records: int = 1000,
        fsync_every_seconds: float = 1.0,
        checkpoint_every: int = 1000,
        compression_level: int = 3,
        start_ns: int | None = None,
        extra: dict[str, Any] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        _resume: tuple[SessionInfo, SegmentHeader, SessionLock] | None = None,
    ) -> None:
        if not SESSION_ID.match(session_id):
            raise ValueError(f"session_id {session_id!r} must match {SESSION_ID.pattern}")
        if checkpoint_every < 1 or fsync_every_records < 1 or rotate_bytes < 1:
            raise ValueError("checkpoint_every, fsync_every_records, rotate_bytes must be >= 1")
        self.session_dir = Path(root_dir) / session_id
        self.rotate_bytes = rotate_bytes
        # Rotation by time follows the records' receive clock, not the wall clock, so that an
        # import of an old capture rotates exactly like the live session did.
        self._rotate_ns = int(rotate_seconds * 1e9)
        self.fsync_every_records = fsync_every_records
        self.fsync_every_seconds = fsync_every_seconds
        self.compression_level = compression_level
        self._monotonic = monotonic
        self._closed: list[dict[str, Any]] = []
        self._compressing: list[tuple[dict[str, Any], Future]] = []
        self._compressor: ThreadPoolExecutor | None = None
        self._fh = None
        if _resume is not None:
            info, header, self.lock = _resume
            self._init_resumed(info, header)
            return
        self.session_dir.mkdir(parents=True, exist_ok=False)
        _fsync_dir(self.session_dir.parent)
        self.lock = SessionLock.acquire(self.session_dir, "a second writer")
        self._header = SegmentHeader(
            session_id=session_id,
            venue=venue,
            streams=tuple(streams),
            symbols=tuple(symbols),
            start_ns=time.time_ns() if start_ns is None else start_ns,
            software_version=software_version,
            checkpoint_every=checkpoint_every,
            extra=dict(extra or {}),
        )
        self._seq = 0
        self._digest = ZERO_DIGEST
        self._counts = empty_counts()
        self._first_recv: int | None = None
        self._last_recv: int | None = None
        self._write_manifest("open")
        self._open_segment(self._header)

    # --- hot path ----------------------------------------------------------------------------

    def append(
        self,
        kind: RecordKind | int | str,
        conn_id: int,
        recv_ns: int,
        payload: bytes,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Append one record (ws frame, REST response or connection event); -> its seq."""
        rkind = _KINDS.get(kind)
        if rkind is None:
            raise ValueError(f"kind {kind!r} is not one of ws, rest, conn")
        if self._fh is None:
            raise RuntimeError("the session is closed")
        seq = self._seq
        frame, self._digest = encode_record(
            self._digest,
            rkind,
            seq,
            recv_ns,
            conn_id,
            canonical_json(meta) if meta else b"",
            payload,
        )
        self._fh.write(frame)
        self._seq = seq + 1
        if self._seg_first_recv is None:
            self._seg_first_recv = recv_ns
        self._wrote(rkind.name.lower(), 1, len(frame), recv_ns, recv_ns)
        return seq

    def append_many(self, kind: RecordKind | int | str, records: Sequence[tuple]) -> None:
        """``append`` of many (conn_id, recv_ns, payload) records without meta, in order: the
        same bytes, segments and checkpoints as one ``append`` each, written a chunk at a time
        (a chunk ends where a checkpoint or a rotation is due)."""
        rkind = _KINDS.get(kind)
        if rkind is None:
            raise ValueError(f"kind {kind!r} is not one of ws, rest, conn")
        if self._fh is None:
            raise RuntimeError("the session is closed")
        name = rkind.name.lower()
        every = self._header.checkpoint_every
        pos, n = 0, len(records)
        while pos < n:
            room = every - self._since_checkpoint
            if self._seg_first_recv is None:
                self._seg_first_recv = records[pos][1]
            seg_first, limit_ns = self._seg_first_recv, self._rotate_ns
            limit_bytes = self.rotate_bytes - self._seg_bytes
            digest, seq, size = self._digest, self._seq, 0
            out: list[bytes] = []
            # encode_record's bytes (format.py), inlined: this loop runs once per frame.
            head, base, blake = RECORD_HEAD.pack, BODY_FIELDS.size, hashlib.blake2b
            for conn_id, recv_ns, payload in records[pos : pos + room]:
                body = base + len(payload)
                if body > MAX_BODY:
                    raise FormatError(f"record body of {body} bytes exceeds {MAX_BODY}")
                signed = head(body, rkind, seq, recv_ns, conn_id, 0) + payload
                digest = blake(digest + signed, digest_size=DIGEST_SIZE).digest()
                out += (signed, digest[:TAG_SIZE])
                seq += 1
                size += len(signed) + TAG_SIZE
                if size >= limit_bytes or recv_ns - seg_first >= limit_ns:
                    break  # rotation is due after this record
            count = seq - self._seq
            self._fh.write(b"".join(out))
            self._digest, self._seq = digest, seq
            self._wrote(name, count, size, records[pos][1], records[pos + count - 1][1])
            pos += count

    def _wrote(self, name: str, count: int, size: int, first_recv: int, last_recv: int) -> None:
        """Bookkeeping after records reached the file, then what is due: a checkpoint, a
        rotation, an fsync (in that order, as after each single record)."""
        self._seg_bytes += size
        self._unsynced += count
        self._since_checkpoint += count
        self._counts[name] += count
        if self._first_recv is None:
            self._first_recv = first_recv
        self._last_recv = last_recv
        if self._since_checkpoint >= self._header.checkpoint_every:
            self._checkpoint(segment_end=False)
        if (
            self._seg_bytes >= self.rotate_bytes
            or last_recv - self._seg_first_recv >= self._rotate_ns
        ):
            self._rotate()
        elif (
            self._unsynced >= self.fsync_every_records
            or self._monotonic() - self._last_sync >= self.fsync_every_seconds
        ):
            self.sync()

    @property
    def unsynced(self) -> int:
        """Data records appended since the last fsync (0: everything appended is durable)."""
        return self._unsynced

    def idle_sync(self) -> bool:
        """``sync`` when records have waited ``fsync_every_seconds`` since the last fsync: a
        quiet stream makes no append that would trigger it (call it from a timer). -> synced"""
        if (
            self._fh is None
            or not self._unsynced
            or self._monotonic() - self._last_sync < self.fsync_every_seconds
        ):
            return False
        self.sync()
        return True

    def sync(self) -> None:
        """Flush and fsync now: everything appended so far is durable when it returns (the
        live pipeline's write-ahead gate calls it before any row leaves the process)."""
        if self._fh is None:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._unsynced = 0
        self._last_sync = self._monotonic()
        if self._compressing and self._collect(wait=False):
            self._write_manifest("open")

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self, stop_exchange_ms: int | None, *, clean: bool = True) -> ClosedSession:
        """Write the footer, compress the last segment and mark the session closed.

        ``stop_exchange_ms`` is the exchange-time watermark at the stop: replay emits exactly
        the bars whose minute ended by then, like the live job's clean stop.
        """
        if self._fh is None:
            raise RuntimeError("the session is closed")
        footer = Footer(
            records=self._seq,
            counts=dict(self._counts),
            first_recv_ns=self._first_recv,
            last_recv_ns=self._last_recv,
            stop_exchange_ms=stop_exchange_ms,
            clean=clean,
            segments=self._header.segment_index,
        )
        self._write_structural(RecordKind.FOOTER, canonical_json(footer.to_json()), self._digest)
        self._close_segment()
        self._compressor.shutdown()
        state = "closed" if clean else "recovered"
        self._write_manifest(state, footer=footer)
        self.lock.release()
        return ClosedSession(
            self.session_dir, self.closed_segments(), self._seq, self._digest.hex(), footer
        )

    def closed_segments(self, wait: bool = False) -> list[Path]:
        """Compressed, immutable segments, in order: safe to upload. Rotated segments join the
        list when their background compression has finished (``wait``: wait for it)."""
        if self._compressing and self._collect(wait) and self._fh is not None:
            self._write_manifest("open")
        return [self.session_dir / s["file"] for s in self._closed]

    @property
    def records(self) -> int:
        return self._seq

    @property
    def digest(self) -> str:
        return self._digest.hex()

    # --- internals ---------------------------------------------------------------------------

    def _open_segment(self, header: SegmentHeader) -> None:
        self._last_sync = self._monotonic()
        self._header = header
        self._seg_path = self.session_dir / segment_name(header.segment_index, compressed=False)
        head, self._digest = encode_header(header)
        self._fh = open(self._seg_path, "xb", buffering=1 << 20)  # noqa: SIM115 - lives on
        self._fh.write(head)
        self._seg_bytes = len(head)
        self._seg_first_recv = None
        self._since_checkpoint = 0
        self._unsynced = 0
        self.sync()
        _fsync_dir(self.session_dir)

    def _write_structural(self, kind: RecordKind, meta: bytes, payload: bytes) -> None:
        recv_ns = self._last_recv if self._last_recv is not None else self._header.start_ns
        frame, self._digest = encode_record(
            self._digest, kind, self._seq, recv_ns, 0, meta, payload
        )
        self._fh.write(frame)
        self._seq += 1
        self._seg_bytes += len(frame)
        if kind is RecordKind.CHECKPOINT:
            self._counts["checkpoint"] += 1

    def _checkpoint(self, segment_end: bool) -> None:
        payload = checkpoint_payload(self._seq, self._digest)
        self._write_structural(
            RecordKind.CHECKPOINT, SEGMENT_END_META if segment_end else b"", payload
        )
        self._since_checkpoint = 0

    def _close_segment(self, background: bool = False) -> None:
        """Seal the active file and compress it: on a rotation in a background thread (a
        64 MiB segment takes seconds the live loop must not stall for; zstd releases the GIL),
        listed in the manifest once done; at ``close`` right away."""
        self.sync()
        self._fh.close()
        self._fh = None
        entry = {
            "index": self._header.segment_index,
            "first_seq": self._header.first_seq,
            "records": self._seq - self._header.first_seq,
            "raw_bytes": self._seg_path.stat().st_size,
            "final_digest": self._digest.hex(),
        }
        if self._compressor is None:
            self._compressor = ThreadPoolExecutor(1, thread_name_prefix="segment-zstd")
        job = self._compressor.submit(_compress_and_hash, self._seg_path, self.compression_level)
        self._compressing.append((entry, job))
        self._collect(wait=not background)

    def _collect(self, wait: bool) -> bool:
        """List the segments whose compression finished (in order); True if any was."""
        done = False
        while self._compressing and (wait or self._compressing[0][1].done()):
            entry, job = self._compressing.pop(0)
            final, sha = job.result()  # a failed compression raises here, not silently
            self._closed.append(
                {"file": final.name, **entry, "bytes": final.stat().st_size, "sha256": sha}
            )
            done = True
        return done

    def _rotate(self) -> None:
        self._checkpoint(segment_end=True)
        self._close_segment(background=True)
        self._open_segment(self._header.next_segment(self._seq, self._digest))

    def _write_manifest(self, state: str, footer: Footer | None = None) -> None:
        doc: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "state": state,
            "header": {
                k: v
                for k, v in self._header.to_json().items()
                if k not in ("segment_index", "first_seq", "prev_digest")
            },
            # Readers derive the most decoded bytes a segment may hold from it.
            "rotate_bytes": self.rotate_bytes,
            "segments": self._closed,
        }
        if footer is not None:
            doc["records"] = self._seq
            doc["final_digest"] = self._digest.hex()
            doc["footer"] = footer.to_json()
        _write_atomic(
            self.session_dir / MANIFEST, orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
        )

    def _init_resumed(self, info: SessionInfo, header: SegmentHeader) -> None:
        """Continue an unclosed session after ``recover`` cut its torn tail."""
        self._header = header
        self._seq = info.records
        self._digest = info.digest
        self._counts = dict(info.counts)
        self._first_recv = info.first_recv_ns
        self._last_recv = info.last_recv_ns
        self._last_sync = self._monotonic()
        if not info.segments:
            self._open_segment(header)
            return
        last = info.segments[-1]
        for seg in info.segments:
            path, sha = seg.path, seg.sha256
            if seg is not last and not path.name.endswith(".zst"):
                # Sealed by a rotation, its background compression cut short by the crash.
                path, sha = _compress_and_hash(path, self.compression_level)
            if path.name.endswith(".zst"):
                self._closed.append(
                    {
                        "file": path.name,
                        "index": seg.header.segment_index,
                        "first_seq": seg.first_seq,
                        "records": seg.records,
                        "raw_bytes": seg.end_offset,
                        "bytes": path.stat().st_size,
                        "sha256": sha,
                        "final_digest": seg.final_digest.hex(),
                    }
                )
        if last.path.name.endswith(".zst"):
            # Crashed between compressing a rotated segment and opening the next one.
            self._open_segment(self._header.next_segment(self._seq, self._digest))
            return
        self._seg_path = last.path
        self._fh = open(last.path, "ab", buffering=1 << 20)  # noqa: SIM115 - lives on
        self._seg_bytes = last.path.stat().st_size
        self._last_sync = self._monotonic()
        self._seg_first_recv = None
        self._since_checkpoint = 0
        self._unsynced = 0


@dataclass(frozen=True)
class Recovery:
    session_dir: Path
    already_closed: bool
    cut_bytes: int  # bytes of torn tail removed
    records: int
    final_digest: str


def _resolve_leftovers(session_dir: Path) -> None:
    """Finish or undo a compression that a crash interrupted."""
    for tmp in session_dir.glob("seg-*.qlog.zst.tmp"):
        tmp.unlink()
    for raw in session_dir.glob("seg-*.qlog"):
        zst = raw.with_name(raw.name + ".zst")
        if zst.exists():
            # The .zst was fsynced before its rename, so it is complete: the raw copy goes.
            raw.unlink()
    for tmp in session_dir.glob("*.tmp"):
        tmp.unlink()
    _fsync_dir(session_dir)


def _drop_torn_header(session_dir: Path) -> bool:
    """An active segment whose header never fully reached the disk holds no records."""
    files = segment_files(session_dir)
    if not files or files[-1].name.endswith(".zst"):
        return False
    data = files[-1].read_bytes()
    try:
        decode_header(data)
    except FormatError as exc:
        if "truncated" in str(exc) or not data.strip(b"\0"):
            files[-1].unlink()
            return True
        raise SessionLogError(files[-1], str(exc), offset=exc.offset, header=True) from None
    return False


def _manifest_header(session_dir: Path) -> SegmentHeader:
    head = orjson.loads((session_dir / MANIFEST).read_bytes())["header"]
    return SegmentHeader(
        session_id=head["session_id"],
        venue=head["venue"],
        streams=tuple(head["streams"]),
        symbols=tuple(head["symbols"]),
        start_ns=head["start_ns"],
        software_version=head["software_version"],
        checkpoint_every=head["checkpoint_every"],
        extra=head.get("extra") or {},
    )


def recover(session_dir: Path | str, stop_exchange_ms: int | None = None) -> Recovery:
    """Close a session that ended without a footer (a crash): cut the torn tail of the active
    segment, then write the footer (``clean=false``) and compress. Idempotent.

    Corruption anywhere but the very end is not a torn tail and raises ``SessionLogError``:
    recovery never throws away records that were followed by intact data.
    """
    session_dir = Path(session_dir)
    if not (session_dir / MANIFEST).exists() and not segment_files(session_dir):
        raise SessionLogError(session_dir, "is not a session directory (no segments, no manifest)")
    # A live writer's active segment would look torn: refuse it (SessionLocked) untouched.
    lock = SessionLock.acquire(session_dir, "recover")
    try:
        return _recover_locked(session_dir, stop_exchange_ms, lock)
    finally:
        lock.release()


def _recover_locked(session_dir: Path, stop_exchange_ms: int | None, lock: SessionLock) -> Recovery:
    _resolve_leftovers(session_dir)
    _drop_torn_header(session_dir)
    if segment_files(session_dir):
        info = SessionReader(session_dir, strict=False).verify()
        header = info.segments[-1].header
    else:  # the first segment's header never reached the disk: the session is empty
        info = SessionInfo()
        header = _manifest_header(session_dir)
    if info.footer is not None:
        return Recovery(session_dir, True, 0, info.records, info.final_digest)
    cut = 0
    if info.torn_tail is not None:
        path, offset = info.torn_tail
        cut = path.stat().st_size - offset
        with open(path, "r+b") as fh:
            fh.truncate(offset)
            fh.flush()
            os.fsync(fh.fileno())
    writer = SessionWriter(
        session_dir.parent,
        session_dir.name,
        header.venue,
        header.streams,
        header.symbols,
        header.software_version,
        rotate_bytes=(read_manifest(session_dir) or {}).get("rotate_bytes", DEFAULT_ROTATE_BYTES),
        _resume=(info, header, lock),
    )
    closed = writer.close(stop_exchange_ms, clean=False)
    return Recovery(session_dir, False, cut, closed.records, closed.final_digest)
