"""Read and verify session logs: a session directory or a single segment file.

Every problem raises ``SessionLogError`` naming the file, the record index (its position in the
session, which equals the sequence number it should carry) and the byte offset inside the
segment's decoded bytes (for ``.zst`` segments, the offset after decompression).

Memory is bounded whatever the file holds: compressed segments are decompressed a chunk at a
time (never more than ``CHUNK`` decoded bytes per step), a segment may not decode to more than
``max_segment_bytes`` (from the writer's ``rotate_bytes``, recorded in ``session.json``; see
``format.max_segment_bytes``), and a record that declares a body the cap cannot hold is refused
before anything is buffered for it. A decompression bomb is refused at the record it reaches.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import zstandard

from quant_core.native.chain import scan
from quant_core.sessionlog.format import (
    BODY_FIELDS,
    DATA_KINDS,
    DEFAULT_ROTATE_BYTES,
    LEN_FIELD,
    MAX_BODY,
    SEGMENT_END_META,
    TAG_SIZE,
    ZERO_DIGEST,
    Footer,
    FormatError,
    Incomplete,
    Record,
    RecordKind,
    SegmentHeader,
    decode_checkpoint,
    decode_header,
    decode_record,
    empty_counts,
    max_segment_bytes,
    peek_seq,
)

_MIN_BODY = BODY_FIELDS.size
_MIN_RECORD = LEN_FIELD.size + BODY_FIELDS.size + TAG_SIZE
KIND_NAMES = ("", *(k.name.lower() for k in RecordKind))
SEGMENT_RE = re.compile(r"^seg-(\d{6})\.qlog(\.zst)?$")
MANIFEST = "session.json"
CHUNK = 1 << 20
ZSTD_HEADER_MAX = 18  # bytes of the largest zstd frame header


def segment_name(index: int, compressed: bool) -> str:
    return f"seg-{index:06d}.qlog" + (".zst" if compressed else "")


class SessionLogError(Exception):
    """A session log that is not intact; names the file and the position of the problem."""

    def __init__(
        self,
        file: Path | str,
        what: str,
        *,
        record: int | None = None,
        offset: int | None = None,
        header: bool = False,
    ) -> None:
        self.file = str(file)
        self.what = what
        self.record = record
        self.offset = offset
        self.header = header
        if header:
            where = f"segment header at byte offset {offset}: "
        elif record is not None:
            where = f"record {record} at byte offset {offset}: "
        elif offset is not None:
            where = f"byte offset {offset}: "
        else:
            where = ""
        super().__init__(f"{self.file}: {where}{what}")

    def __reduce__(self):  # crosses process boundaries (replay verifies in a worker)
        return _session_log_error, (self.file, self.what, self.record, self.offset, self.header)


def _session_log_error(file, what, record, offset, header) -> SessionLogError:
    return SessionLogError(file, what, record=record, offset=offset, header=header)


@dataclass
class SegmentInfo:
    path: Path
    header: SegmentHeader
    first_seq: int
    records: int = 0
    final_digest: bytes = ZERO_DIGEST
    sha256: str = ""
    sealed: bool = False  # ends with an end-of-segment checkpoint or the footer
    end_offset: int = 0  # decoded bytes of intact records (the cut point of a torn tail)


@dataclass
class SessionInfo:
    """What a full pass over a session found; complete once iteration finished."""

    header: SegmentHeader | None = None
    segments: list[SegmentInfo] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=empty_counts)
    records: int = 0
    first_recv_ns: int | None = None
    last_recv_ns: int | None = None
    footer: Footer | None = None
    digest: bytes = ZERO_DIGEST  # chain digest after the last record read
    torn_tail: tuple[Path, int] | None = None  # (file, offset) where an unsynced tail begins

    @property
    def closed(self) -> bool:
        return self.footer is not None

    @property
    def final_digest(self) -> str:
        return self.digest.hex()


def segment_files(session_dir: Path) -> list[Path]:
    """Segments ordered by index; a compressed segment wins over a leftover raw copy."""
    found: dict[int, Path] = {}
    for path in session_dir.iterdir():
        m = SEGMENT_RE.match(path.name)
        if not m:
            continue
        index = int(m.group(1))
        if index not in found or path.name.endswith(".zst"):
            found[index] = path
    return [found[i] for i in sorted(found)]


class SegmentTooLarge(Exception):
    """A segment decodes to more than its cap (``max_segment_bytes``); the scan names the
    record it was reading."""

    def __init__(self, cap: int) -> None:
        super().__init__(
            f"the segment decodes to more than {cap} bytes, more than its writer can write "
            "(a decompression bomb?); max_segment_bytes raises the cap"
        )


class _Hashed:
    """A file whose bytes are hashed as the decompressor reads them."""

    def __init__(self, fh, sha: hashlib._Hash) -> None:
        self.fh = fh
        self.sha = sha

    def read(self, size: int = -1) -> bytes:
        raw = self.fh.read(size)
        self.sha.update(raw)
        return raw


def _chunks(path: Path, sha: hashlib._Hash, cap: int) -> Iterator[bytes]:
    """Decoded bytes of a segment file in chunks of at most ``CHUNK`` bytes, at most ``cap``
    in all (else ``SegmentTooLarge``); hashes the file bytes on the way."""
    total = 0
    with open(path, "rb") as fh:
        if not path.name.endswith(".zst"):
            while raw := fh.read(CHUNK):
                sha.update(raw)
                total += len(raw)
                if total > cap:
                    raise SegmentTooLarge(cap)
                yield raw
            return
        # A stream reader returns at most the size asked per read, whatever the ratio: a
        # one-shot decompress of a crafted 32 KB frame would take a GiB at once.
        params = zstandard.get_frame_parameters(fh.read(ZSTD_HEADER_MAX))
        size = params.content_size
        if size == zstandard.CONTENTSIZE_UNKNOWN:
            raise zstandard.ZstdError("the zstd frame does not declare its decoded size")
        fh.seek(0)
        reader = zstandard.ZstdDecompressor().stream_reader(
            _Hashed(fh, sha), read_size=CHUNK, read_across_frames=False
        )
        try:
            while out := reader.read(CHUNK):
                total += len(out)
                if total > size:
                    raise zstandard.ZstdError("data after the end of the zstd frame")
                if total > cap:
                    raise SegmentTooLarge(cap)
                yield out
        except zstandard.ZstdError:
            if total == size:  # the frame was whole: what failed to decode came after it
                raise zstandard.ZstdError("data after the end of the zstd frame") from None
            raise
        if total < size:
            raise zstandard.ZstdError("compressed segment is truncated (zstd frame incomplete)")


def _refill(buf: bytes, pos: int, chunks: Iterator[bytes]) -> bytes | None:
    """``buf[pos:]`` and as many further chunks as the record at ``pos`` declares it needs
    (joined once: a record spanning many chunks costs no quadratic copying), or None when no
    data follows."""
    rest = buf[pos:]
    want = len(rest) + 1
    if len(rest) >= LEN_FIELD.size:
        want = max(want, LEN_FIELD.size + LEN_FIELD.unpack_from(rest, 0)[0] + TAG_SIZE)
    parts, have = [rest], len(rest)
    while have < want:
        chunk = next(chunks, None)
        if chunk is None:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts) if len(parts) > 1 else None


def _all_zero(buf: bytes, start: int) -> bool:
    return buf[start:].count(0) == len(buf) - start


class _SegmentScan:
    """Verifies one segment against the chain state carried in ``info``."""

    def __init__(
        self,
        path: Path,
        info: SessionInfo,
        *,
        first: bool,
        lone: bool,
        tolerate_tail: bool,
        cap: int,
    ) -> None:
        self.path = path
        self.cap = cap
        self.info = info
        self.first = first
        self.lone = lone  # a single segment file: it may start mid-session
        self.tolerate_tail = tolerate_tail

    def error(self, what: str, record: int | None, offset: int | None) -> SessionLogError:
        return SessionLogError(self.path, what, record=record, offset=offset)

    def _check_header(self, header: SegmentHeader) -> None:
        info = self.info
        if self.first:
            if not self.lone and (
                header.segment_index != 1
                or header.first_seq != 0
                or header.prev_digest != ZERO_DIGEST
            ):
                raise SessionLogError(
                    self.path,
                    f"first segment has index {header.segment_index}, first_seq "
                    f"{header.first_seq}: earlier segments are missing",
                    offset=0,
                    header=True,
                )
            info.header = header
            info.records = header.first_seq
            info.digest = header.prev_digest
            return
        prev = info.segments[-1]
        problems = []
        if header.session_id != info.header.session_id:
            problems.append(f"session_id {header.session_id!r} != {info.header.session_id!r}")
        if header.segment_index != prev.header.segment_index + 1:
            problems.append(
                f"segment index {header.segment_index} follows {prev.header.segment_index} "
                "(missing or reordered segment)"
            )
        if header.first_seq != info.records:
            problems.append(f"first_seq {header.first_seq}, expected {info.records}")
        if header.prev_digest != info.digest:
            problems.append("prev_digest does not continue the chain of the previous segment")
        if not prev.sealed:
            problems.append(f"previous segment {prev.path.name} was not sealed")
        if problems:
            raise SessionLogError(self.path, "; ".join(problems), offset=0, header=True)

    def run(self, emit: bool = True, batch: int = 0, times: bool = False) -> Iterator:
        """Yield the segment's records, verifying each; see the module docstring. Without
        ``emit``, intact data records are verified but not yielded (a pure verification
        skips building them). With ``batch``, only data records are yielded, as
        ``(kind, meta, payloads)``: up to ``batch`` consecutive ws frames together (meta
        empty), a rest or conn record alone; no Record objects are built for them. With
        ``times`` each batch also carries its records' receive times: ``(kind, meta,
        payloads, recv_ns)`` (books2: replay gives them to the books as live did).

        Hot loop: the common case (a complete, intact data record with the expected seq) is
        verified in C, many records per call (``quant_core/native/chain.c``: ``scan``, which
        takes a record only under the conditions the slow path accepts it); anything else
        (buffer refill, damage, checkpoints, the footer, rest and conn records in batch mode)
        takes the slow path through ``format.decode_record``, which re-checks the record and
        produces the precise error. State is written back to ``info``/``seg`` at
        structural records and when the generator ends, so read them after iteration.
        """
        info = self.info
        sha = hashlib.sha256()
        chunks = _chunks(self.path, sha, self.cap)
        buf = b""
        base = 0  # decoded offset of buf[0]
        pos = 0
        seg: SegmentInfo | None = None
        try:
            buf = next(chunks, b"")
            try:
                header, pos, digest = decode_header(buf)
            except FormatError as exc:
                raise SessionLogError(self.path, str(exc), offset=exc.offset, header=True) from None
            self._check_header(header)
            seg = SegmentInfo(self.path, header, first_seq=header.first_seq)
            info.segments.append(seg)
            info.digest = digest
            expected = header.first_seq
            since_checkpoint = 0
            by_kind = [0] * 6
            frames: list[bytes] = []  # ws payloads not yet yielded (batch mode)
            recvs: list[int] = []  # books2: their receive times (batch mode with times)
            first_recv, last_recv = info.first_recv_ns, info.last_recv_ns
            blen = len(buf)
            # An impossible checkpoint_every (a crafted header) must not overflow the C scan's
            # int64: clamped, it decides exactly as the Python comparisons do.
            every = header.checkpoint_every
            c_every = max(0, min(every, 1 << 62))
            sealed = False  # seg.sealed, kept local for the hot loop
            unpack_len = LEN_FIELD.unpack_from

            def sync() -> None:
                info.records = expected
                info.digest = digest
                info.first_recv_ns, info.last_recv_ns = first_recv, last_recv
                for k in range(1, 5):
                    info.counts[KIND_NAMES[k]] += by_kind[k]
                    by_kind[k] = 0
                seg.records = expected - seg.first_seq
                seg.final_digest = digest
                seg.end_offset = base + pos

            try:
                while True:
                    # fast path (C): intact data records up to the first one it does not
                    # take, which the slow path below decides on with its exact error
                    if batch:
                        limit, out = batch - len(frames), frames
                    elif emit:
                        limit, out = 1, []  # one at a time: info/seg state as each is yielded
                    else:
                        limit, out = 0, None
                    pos, digest, taken, first, last, n_ws, n_rest, n_conn = scan(
                        buf,
                        pos,
                        digest,
                        expected,
                        since_checkpoint,
                        c_every,
                        sealed,
                        limit,
                        times,
                        out,
                        recvs,
                        None if batch else Record,
                    )
                    if taken:
                        if first_recv is None:
                            first_recv = first
                        last_recv = last
                        since_checkpoint += taken
                        expected += taken
                        by_kind[1] += n_ws
                        by_kind[2] += n_rest
                        by_kind[3] += n_conn
                        if batch:
                            if len(frames) >= batch:
                                yield _batch(1, b"", frames, recvs, times)
                                frames, recvs = [], []
                        elif emit:
                            yield out[0]
                        continue
                    # slow path
                    try:
                        rec, npos, ndigest = decode_record(buf, pos, digest)
                    except Incomplete:
                        if pos + LEN_FIELD.size <= blen:
                            (n,) = unpack_len(buf, pos)
                            if base + pos + LEN_FIELD.size + n + TAG_SIZE > self.cap:
                                raise self.error(
                                    f"record length {n} would take the segment past "
                                    f"{self.cap} decoded bytes, more than its writer can "
                                    "write; max_segment_bytes raises the cap",
                                    expected,
                                    base + pos,
                                ) from None
                        more = _refill(buf, pos, chunks)
                        if more is None:
                            break
                        buf = more
                        base += pos
                        pos = 0
                        blen = len(buf)
                        continue
                    except FormatError as exc:
                        if self.tolerate_tail and self._is_tail(buf, pos, chunks):
                            break
                        what = self._diagnose(buf, pos, expected, exc)
                        raise self.error(what, expected, base + pos) from None
                    if seg.sealed:
                        raise self.error("data after the end of the segment", expected, base + pos)
                    if rec.seq != expected:
                        # The chain is intact but the numbering is not: a record was
                        # re-chained out of order, repeated or dropped.
                        raise self.error(self._seq_problem(rec.seq, expected), expected, base + pos)
                    kind = rec.kind
                    if kind in DATA_KINDS:
                        if first_recv is None:
                            first_recv = rec.recv_ns
                        last_recv = rec.recv_ns
                        since_checkpoint += 1
                        if since_checkpoint > every:
                            raise self.error(
                                f"no checkpoint within {every} records (checkpoint removed)",
                                expected,
                                base + pos,
                            )
                    else:
                        sync()
                        if kind == RecordKind.CHECKPOINT:
                            self._check_checkpoint(rec, digest, expected, base + pos)
                            since_checkpoint = 0
                            if rec.meta == SEGMENT_END_META:
                                sealed = seg.sealed = True
                        else:
                            info.footer = self._check_footer(rec, digest, expected, base + pos)
                            sealed = seg.sealed = True
                    if kind != RecordKind.FOOTER:
                        by_kind[kind] += 1
                    pos, digest = npos, ndigest
                    expected += 1
                    if not batch:
                        yield rec
                    elif kind == RecordKind.WS:
                        frames.append(rec.payload)
                        recvs.append(rec.recv_ns)  # books2
                        if len(frames) >= batch:
                            yield _batch(1, b"", frames, recvs, times)
                            frames, recvs = [], []
                    elif kind in DATA_KINDS:
                        if frames:
                            yield _batch(1, b"", frames, recvs, times)
                            frames, recvs = [], []
                        yield _batch(kind, rec.meta, [rec.payload], [rec.recv_ns], times)
                if frames:
                    yield _batch(1, b"", frames, recvs, times)
            finally:
                sync()
        except zstandard.ZstdError as exc:
            raise self.error(
                f"compressed data is corrupt ({exc}); records before this one verified",
                info.records,
                base + pos,
            ) from None
        except SegmentTooLarge as exc:
            raise self.error(str(exc), info.records, base + pos) from None
        seg.sha256 = sha.hexdigest()
        if pos < len(buf):
            if not self.tolerate_tail:
                raise self.error(
                    f"truncated record: {len(buf) - pos} bytes at the end do not form a record",
                    info.records,
                    base + pos,
                )
            info.torn_tail = (self.path, base + pos)
        elif not seg.sealed and not self.tolerate_tail:
            raise self.error(
                "segment ends without a sealing checkpoint or footer "
                "(truncated, or an unclosed session: run recover)",
                info.records,
                base + pos,
            )

    def _is_tail(self, buf: bytes, pos: int, chunks: Iterator[bytes]) -> bool:
        """A bad record is a torn tail when nothing intact can follow it: it reaches the end
        of the file, or only zero bytes follow (space allocated but never written)."""
        rest = next(chunks, None)
        if rest is not None:
            return False
        if _all_zero(buf, pos):
            return True
        n = int.from_bytes(buf[pos : pos + 4], "little")
        return pos + 4 + n + 4 >= len(buf)

    def _diagnose(self, buf: bytes, pos: int, expected: int, exc: FormatError) -> str:
        seq = peek_seq(buf, pos)
        if seq is not None and seq != expected and "digest" in str(exc):
            return self._seq_problem(seq, expected)
        return str(exc)

    @staticmethod
    def _seq_problem(seq: int, expected: int) -> str:
        if seq < expected:
            return f"sequence {seq} where {expected} was expected (duplicated or reordered record)"
        return (
            f"sequence {seq} where {expected} was expected "
            "(missing or reordered record: sequence gap)"
        )

    def _check_checkpoint(self, rec: Record, digest: bytes, index: int, offset: int) -> None:
        try:
            count, stored = decode_checkpoint(rec.payload)
        except FormatError as exc:
            raise self.error(str(exc), index, offset) from None
        if count != index or stored != digest:
            raise self.error(
                f"checkpoint (count {count}) does not match the chain: a record before it was "
                "altered",
                index,
                offset,
            )

    def _check_footer(self, rec: Record, digest: bytes, index: int, offset: int) -> Footer:
        info = self.info
        try:
            footer = Footer.from_json(orjson.loads(rec.meta))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self.error(f"footer JSON is invalid: {exc}", index, offset) from None
        if rec.payload != digest:
            raise self.error("footer digest does not match the chain", index, offset)
        if footer.records != index:
            raise self.error(
                f"footer records={footer.records} but it is record {index}", index, offset
            )
        if self.lone and info.header.first_seq != 0:
            return footer  # counts cover segments that are not being read
        wrong = _footer_disagrees(footer, info)
        if wrong is not None:
            raise self.error(wrong, index, offset)
        return footer


def _footer_disagrees(footer: Footer, info: SessionInfo) -> str | None:
    """How the footer's totals differ from what the log holds, or None when they agree."""
    held = {
        "counts": dict(sorted(info.counts.items())),
        "first_recv_ns": info.first_recv_ns,
        "last_recv_ns": info.last_recv_ns,
        "segments": len(info.segments),
    }
    stated = footer.to_json()
    for key, value in held.items():
        if stated[key] != value:
            return f"footer {key}={stated[key]!r} but the log holds {value!r}"
    return None


class SessionReader:
    """Iterate the records of a session directory or of one segment file, verifying them.

    ``strict`` (the default) demands a complete, closed session: a torn tail or a missing
    footer is an error. ``strict=False`` reads an unclosed session up to its torn tail (what
    ``recover`` does), and a lone segment file from the middle of a session.
    ``max_segment_bytes`` caps the decoded bytes of each segment (default: derived from the
    ``rotate_bytes`` that ``session.json`` records, else the writer's default).
    """

    def __init__(
        self, path: Path | str, *, strict: bool = True, max_segment_bytes: int | None = None
    ) -> None:
        self.path = Path(path)
        self.strict = strict
        self.info = SessionInfo()
        self.max_segment_bytes = max_segment_bytes or segment_cap(self.path)
        if self.path.is_dir():
            self.files = segment_files(self.path)
            if not self.files:
                raise SessionLogError(self.path, "no segment files (seg-NNNNNN.qlog[.zst])")
            self.lone = False
        elif self.path.is_file():
            self.files = [self.path]
            self.lone = True
        else:
            raise SessionLogError(self.path, "does not exist")

    def records(self, structural: bool = False, *, _emit: bool = True) -> Iterator[Record]:
        """All records in order; checkpoints and the footer only when ``structural``."""
        if structural:
            return self._scan(lambda scan: scan.run(_emit))
        return self._scan(lambda scan: (rec for rec in scan.run() if rec.kind <= 3))

    def batches(self, batch: int = 4096, times: bool = False) -> Iterator[tuple]:
        """The data records in order, verified as ``records()`` verifies them, without a
        Record object each: consecutive ws frames together as ``(1, b"", payloads)`` (at most
        ``batch``), a rest or conn record alone as ``(kind, meta, [payload])``; with
        ``times``, each with a fourth item, the records' receive times (ns)."""
        if batch < 1:
            raise ValueError(f"batch={batch} must be >= 1")
        return self._scan(lambda scan: scan.run(True, batch, times))

    def _scan(self, run) -> Iterator:
        info = self.info
        for i, path in enumerate(self.files):
            tolerate = not self.strict and i == len(self.files) - 1
            scan = _SegmentScan(
                path,
                info,
                first=i == 0,
                lone=self.lone,
                tolerate_tail=tolerate,
                cap=self.max_segment_bytes,
            )
            yield from run(scan)
            if info.footer is not None and i != len(self.files) - 1:
                nxt = self.files[i + 1]
                raise SessionLogError(nxt, "segment after the footer", offset=0, header=True)
        if self.strict and not self.lone and info.footer is None:
            last = info.segments[-1]
            raise SessionLogError(
                last.path,
                "session has no footer (unclosed: run recover)",
                record=info.records,
                offset=last.end_offset,
            )
        if not self.lone:
            self._check_manifest()

    __iter__ = records

    def verify(self) -> SessionInfo:
        for _ in self.records(structural=True, _emit=False):
            pass
        return self.info

    def _check_manifest(self) -> None:
        """session.json, when present, must agree with the segments: it is what pins the bytes
        of each compressed file (zstd framing included) and the final digest."""
        path = self.path / MANIFEST
        if not path.exists():
            return
        try:
            doc = orjson.loads(path.read_bytes())
            entries = doc["segments"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SessionLogError(path, f"manifest is invalid: {exc!r}") from None
        if not isinstance(entries, list):
            raise SessionLogError(path, "manifest is invalid: 'segments' is not a list")
        listed = {}
        for n, entry in enumerate(entries):
            for name in ("file", "sha256"):
                if not isinstance(entry, dict) or not isinstance(entry.get(name), str):
                    which = entry.get("file") if isinstance(entry, dict) else None
                    raise SessionLogError(
                        path,
                        f"manifest is invalid: segment entry {n}"
                        + (f" ({which})" if isinstance(which, str) else "")
                        + f" has no {name!r} field (a string)",
                    )
            listed[entry["file"]] = entry
        info = self.info
        for seg in info.segments:
            entry = listed.pop(seg.path.name, None)
            if entry is None:
                if doc.get("state") == "open" or not seg.path.name.endswith(".zst"):
                    continue  # the active segment is listed once it is closed
                raise SessionLogError(path, f"does not list segment {seg.path.name}")
            if entry["sha256"] != seg.sha256:
                raise SessionLogError(
                    seg.path,
                    f"file sha256 {seg.sha256} differs from {MANIFEST} ({entry['sha256']}); "
                    "its records verify, so the compressed framing was altered",
                    record=seg.first_seq + seg.records,
                    offset=seg.end_offset,
                )
        if listed:
            raise SessionLogError(path, f"lists missing segments: {sorted(listed)}")
        final = doc.get("final_digest")
        if info.footer is not None and final is not None and final != info.final_digest:
            raise SessionLogError(
                path, f"final_digest {final} differs from the chain ({info.final_digest})"
            )


def join_segments(session_dir: Path | str, parts: list[SessionInfo]) -> SessionInfo:
    """What ``SessionReader(session_dir).verify()`` returns, from one pass per segment file.

    Each part is ``SessionReader(segment_file).verify()``: a lone segment, whose chain was
    checked from the ``first_seq`` and ``prev_digest`` its header claims. What links them is
    checked here: numbering, digests, sealing, the footer's totals and the manifest. Anything
    amiss re-runs the serial pass, so the error names the same file and position as it would
    have (were the serial pass to find nothing, the parts disagree with it: an error too)."""
    path = Path(session_dir)
    info = SessionInfo()
    problem = not parts
    for k, part in enumerate(parts):
        seg = part.segments[0]
        h = seg.header
        if k == 0:
            info.header = h
            problem |= h.segment_index != 1 or h.first_seq != 0 or h.prev_digest != ZERO_DIGEST
        else:
            prev = info.segments[-1]
            problem |= (
                h.session_id != info.header.session_id
                or h.segment_index != prev.header.segment_index + 1
                or h.first_seq != info.records
                or h.prev_digest != info.digest
                or not prev.sealed
                or info.footer is not None
            )
        info.segments.append(seg)
        for kind, n in part.counts.items():
            info.counts[kind] += n
        info.records = part.records
        info.digest = part.digest
        if info.first_recv_ns is None:
            info.first_recv_ns = part.first_recv_ns
        if part.last_recv_ns is not None:
            info.last_recv_ns = part.last_recv_ns
        info.footer = part.footer
    if not problem and info.footer is not None:
        problem = _footer_disagrees(info.footer, info) is not None
    reader = SessionReader(path)
    if not problem and info.footer is not None and reader.files == [s.path for s in info.segments]:
        reader.info = info
        try:
            reader._check_manifest()
            return info
        except SessionLogError:
            pass
    SessionReader(path).verify()  # raises the serial pass's error
    raise SessionLogError(path, "segments verified alone do not form one session")


def read_manifest(session_dir: Path | str) -> dict | None:
    path = Path(session_dir) / MANIFEST
    return orjson.loads(path.read_bytes()) if path.exists() else None


def segment_cap(path: Path | str) -> int:
    """``max_segment_bytes`` for a session directory (from the ``rotate_bytes`` its manifest
    records) or a segment file (from its directory's manifest, if any)."""
    path = Path(path)
    manifest = (path if path.is_dir() else path.parent) / MANIFEST
    rotate = DEFAULT_ROTATE_BYTES
    try:
        recorded = orjson.loads(manifest.read_bytes()).get("rotate_bytes")
        if isinstance(recorded, int) and recorded > 0:
            rotate = recorded
    except (OSError, ValueError, AttributeError):
        pass  # no manifest (or a bad one, which verification names): the default
    return max_segment_bytes(rotate)


def unverified_records(
    files: list[Path],
    batch: int = 4096,
    max_segment_bytes: int | None = None,
    times: bool = False,
) -> Iterator[tuple]:
    """The data records in order as (kind, meta, payloads), WITHOUT checking the chain:
    consecutive ws frames come together (up to ``batch``, meta empty), a rest or conn record
    alone. For a replay that verifies the same files in parallel and keeps its result only if
    that passes (``quant_core.replay``). Reads a chunk at a time, in the reader's memory
    bounds; stops at the first record it cannot parse (the verifier names the problem).
    ``times`` adds the records' receive times as ``SessionReader.batches`` does."""
    ws = int(RecordKind.WS)
    unpack_len, unpack_body = LEN_FIELD.unpack_from, BODY_FIELDS.unpack_from
    for path in files:
        cap = max_segment_bytes or segment_cap(path)
        chunks = _chunks(path, hashlib.sha1(), cap)  # the verifier checks the file hash
        try:
            buf = next(chunks, b"")
            _, pos, _ = decode_header(buf)
        except (FormatError, zstandard.ZstdError, SegmentTooLarge):
            return
        frames: list[bytes] = []
        recvs: list[int] = []  # books2
        while True:
            size = len(buf)
            while pos + _MIN_RECORD <= size:
                (n,) = unpack_len(buf, pos)
                end = pos + 4 + n
                if n < _MIN_BODY or n > MAX_BODY or end + TAG_SIZE > size:
                    break
                kind, _, recv_ns, _, meta_len = unpack_body(buf, pos + 4)
                pos = end + TAG_SIZE
                if kind == ws:
                    frames.append(buf[end - n + _MIN_BODY + meta_len : end])
                    if times:  # books2
                        recvs.append(recv_ns)
                    if len(frames) >= batch:
                        yield _batch(ws, b"", frames, recvs, times)
                        frames, recvs = [], []
                elif kind <= 3:
                    if frames:
                        yield _batch(ws, b"", frames, recvs, times)
                        frames, recvs = [], []
                    m = end - n + _MIN_BODY
                    yield _batch(
                        kind, buf[m : m + meta_len], [buf[m + meta_len : end]], [recv_ns], times
                    )
            if pos + 4 <= size and not _MIN_BODY <= unpack_len(buf, pos)[0] <= MAX_BODY:
                break  # not a record: the verifier names it
            try:
                more = _refill(buf, pos, chunks)
            except (zstandard.ZstdError, SegmentTooLarge):
                more = None
            if more is None:
                break
            buf, pos = more, 0
        if frames:
            yield _batch(ws, b"", frames, recvs, times)


def _batch(kind: int, meta: bytes, payloads: list[bytes], recvs: list[int], times: bool) -> tuple:
    """books2: one item of the batch readers, with its receive times when ``times``."""
    return (kind, meta, payloads, recvs) if times else (kind, meta, payloads)


def read_header(path: Path) -> SegmentHeader:
    """The header of one segment file, unverified (a full read checks it). Raises FormatError
    or zstandard.ZstdError."""
    return decode_header(next(_chunks(path, hashlib.sha1(), segment_cap(path)), b""))[0]
