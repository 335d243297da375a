"""Session log format v1: pure encoding and decoding of segment headers and records on bytes.

No file I/O here (see ``reader.py`` and ``quant_resources.session_writer``). The byte layout,
the hash chain and the rules are specified in docs/session-log.md; in short::

    segment  := header record*
    header   := MAGIC(8) version:u16 json_len:u32 json tag(4)
    record   := body_len:u32 body tag(4)
    body     := kind:u8 seq:u64 recv_ns:i64 conn_id:u32 meta_len:u32 meta payload

    d(header) = BLAKE2b-256(prev_segment_digest || header without tag)
    d(record) = BLAKE2b-256(d(previous) || body_len || body)
    tag       = first 4 bytes of that digest

Every record carries a 4-byte tag of its chain digest, so a changed byte is caught at the record
it is in; checkpoints and the footer carry the full 256-bit digest.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from hashlib import blake2b
from typing import Any, NamedTuple

import orjson

MAGIC = b"QLOG\r\n\x1a\n"  # PNG-style: text-mode transfers and truncation to 7 bits break it
FORMAT_VERSION = 1
FORMAT_NAME = "quant-session-log"
HASH_NAME = "blake2b-256"
DIGEST_SIZE = 32
TAG_SIZE = 4
ZERO_DIGEST = bytes(DIGEST_SIZE)
# A REST answer is < 1 MiB and a resumed minute of stored trades a few MiB; anything larger is
# a corrupt (or crafted) length. It bounds what a reader buffers for one record.
MAX_BODY = 1 << 26
DEFAULT_ROTATE_BYTES = 64 << 20  # the writer's default segment size
SEGMENT_SLACK = 1 << 20  # checkpoints, the footer and room to spare


def max_segment_bytes(rotate_bytes: int = DEFAULT_ROTATE_BYTES) -> int:
    """The most decoded bytes a segment of a writer with ``rotate_bytes`` can hold: it rotates
    after the record that reached ``rotate_bytes``, so one record (at most ``MAX_BODY``) and
    the structural records can pass it. Readers refuse more (a decompression bomb)."""
    return rotate_bytes + MAX_BODY + SEGMENT_SLACK


_HEAD = struct.Struct("<8sHI")  # magic, version, json_len
LEN_FIELD = struct.Struct("<I")
BODY_FIELDS = struct.Struct("<BQqII")  # kind, seq, recv_ns, conn_id, meta_len
_CHECKPOINT = struct.Struct("<Q32s")  # records before this one, digest after the previous one
HEAD_SIZE = _HEAD.size
RECORD_OVERHEAD = LEN_FIELD.size + BODY_FIELDS.size + TAG_SIZE


class RecordKind(IntEnum):
    WS = 1  # a websocket frame exactly as received
    REST = 2  # a REST response body; meta holds the request (path, params, symbol)
    CONN = 3  # a connection event; meta {"event": "open" | "close" | "reconnect", ...}
    CHECKPOINT = 4  # payload: record count + full chain digest
    FOOTER = 5  # meta: counts, span, stop_exchange_ms; payload: full chain digest

    @classmethod
    def parse(cls, value: RecordKind | int | str) -> RecordKind:
        if isinstance(value, str):
            return cls[value.upper()]
        return cls(value)


DATA_KINDS = frozenset({RecordKind.WS, RecordKind.REST, RecordKind.CONN})


class FormatError(ValueError):
    """Bytes that do not decode; ``offset`` is relative to the start of the decoded buffer."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


def chain(prev: bytes, data: bytes) -> bytes:
    return blake2b(prev + data, digest_size=DIGEST_SIZE).digest()


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace: the same dict always encodes to the same bytes."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


# --- segment header -----------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentHeader:
    session_id: str
    venue: str
    streams: tuple[str, ...]
    symbols: tuple[str, ...]
    start_ns: int
    software_version: str
    segment_index: int = 1
    first_seq: int = 0
    prev_digest: bytes = ZERO_DIGEST
    checkpoint_every: int = 1000
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "hash": HASH_NAME,
            "session_id": self.session_id,
            "venue": self.venue,
            "streams": list(self.streams),
            "symbols": list(self.symbols),
            "start_ns": self.start_ns,
            "software_version": self.software_version,
            "segment_index": self.segment_index,
            "first_seq": self.first_seq,
            "prev_digest": self.prev_digest.hex(),
            "checkpoint_every": self.checkpoint_every,
            "extra": self.extra,
        }

    def next_segment(self, first_seq: int, prev_digest: bytes) -> SegmentHeader:
        return SegmentHeader(
            session_id=self.session_id,
            venue=self.venue,
            streams=self.streams,
            symbols=self.symbols,
            start_ns=self.start_ns,
            software_version=self.software_version,
            segment_index=self.segment_index + 1,
            first_seq=first_seq,
            prev_digest=prev_digest,
            checkpoint_every=self.checkpoint_every,
            extra=self.extra,
        )


def encode_header(header: SegmentHeader) -> tuple[bytes, bytes]:
    """-> (header bytes, chain digest after the header)."""
    body = canonical_json(header.to_json())
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, len(body)) + body
    digest = chain(header.prev_digest, head)
    return head + digest[:TAG_SIZE], digest


def decode_header(buf: bytes) -> tuple[SegmentHeader, int, bytes]:
    """-> (header, its size in bytes, chain digest after it). Raises FormatError."""
    if len(buf) < HEAD_SIZE:
        if MAGIC.startswith(bytes(buf[: len(MAGIC)])):
            raise FormatError(f"segment header truncated ({len(buf)} bytes)", 0)
        raise FormatError("not a session log (magic bytes missing)", 0)
    magic, version, json_len = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FormatError(f"not a session log (magic {magic!r}, expected {MAGIC!r})", 0)
    if version != FORMAT_VERSION:
        raise FormatError(
            f"format version {version} is not supported (this reader reads {FORMAT_VERSION})",
            len(MAGIC),
        )
    end = HEAD_SIZE + json_len
    if json_len > MAX_BODY or end + TAG_SIZE > len(buf):
        raise FormatError(f"segment header truncated (json length {json_len})", HEAD_SIZE)
    raw = bytes(buf[HEAD_SIZE:end])
    try:
        doc = orjson.loads(raw)
        if doc.get("format") != FORMAT_NAME or doc.get("hash") != HASH_NAME:
            raise ValueError(f"format={doc.get('format')!r} hash={doc.get('hash')!r}")
        prev = bytes.fromhex(doc["prev_digest"])
        header = SegmentHeader(
            session_id=doc["session_id"],
            venue=doc["venue"],
            streams=tuple(doc["streams"]),
            symbols=tuple(doc["symbols"]),
            start_ns=int(doc["start_ns"]),
            software_version=doc["software_version"],
            segment_index=int(doc["segment_index"]),
            first_seq=int(doc["first_seq"]),
            prev_digest=prev,
            checkpoint_every=int(doc["checkpoint_every"]),
            extra=dict(doc.get("extra") or {}),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FormatError(f"segment header JSON is invalid: {exc}", HEAD_SIZE) from exc
    digest = chain(prev, bytes(buf[:end]))
    if digest[:TAG_SIZE] != bytes(buf[end : end + TAG_SIZE]):
        raise FormatError("segment header digest mismatch (header altered)", end)
    return header, end + TAG_SIZE, digest


# --- records --------------------------------------------------------------------------------


class Record(NamedTuple):
    kind: int  # a RecordKind value
    seq: int
    recv_ns: int
    conn_id: int
    meta: bytes  # canonical JSON object or b""
    payload: bytes

    def meta_dict(self) -> dict[str, Any]:
        return orjson.loads(self.meta) if self.meta else {}


def encode_record(
    prev: bytes,
    kind: int,
    seq: int,
    recv_ns: int,
    conn_id: int,
    meta: bytes,
    payload: bytes,
) -> tuple[bytes, bytes]:
    """-> (record bytes, chain digest after it)."""
    n = BODY_FIELDS.size + len(meta) + len(payload)
    if n > MAX_BODY:
        raise FormatError(f"record body of {n} bytes exceeds {MAX_BODY}")
    fixed = BODY_FIELDS.pack(kind, seq, recv_ns, conn_id, len(meta))
    signed = LEN_FIELD.pack(n) + fixed + meta + payload
    digest = blake2b(prev + signed, digest_size=DIGEST_SIZE).digest()
    return signed + digest[:TAG_SIZE], digest


class Incomplete(Exception):
    """The buffer ends inside a record (more bytes needed, or a torn tail at end of file)."""


def decode_record(buf: bytes, pos: int, prev: bytes) -> tuple[Record, int, bytes]:
    """Decode the record at ``pos``; -> (record, next position, chain digest after it).

    Raises Incomplete when the buffer ends inside the record, FormatError when the record is
    malformed or its tag does not match the chain.
    """
    if pos + LEN_FIELD.size > len(buf):
        raise Incomplete
    (n,) = LEN_FIELD.unpack_from(buf, pos)
    if n < BODY_FIELDS.size or n > MAX_BODY:
        raise FormatError(f"record length {n} is impossible", pos)
    end = pos + LEN_FIELD.size + n
    if end + TAG_SIZE > len(buf):
        raise Incomplete
    kind, seq, recv_ns, conn_id, meta_len = BODY_FIELDS.unpack_from(buf, pos + LEN_FIELD.size)
    signed = buf[pos:end]
    digest = blake2b(prev + signed, digest_size=DIGEST_SIZE).digest()
    if digest[:TAG_SIZE] != buf[end : end + TAG_SIZE]:
        raise FormatError("record digest mismatch (record altered or out of chain)", pos)
    meta_start = pos + LEN_FIELD.size + BODY_FIELDS.size
    if meta_len > n - BODY_FIELDS.size:
        raise FormatError(f"meta length {meta_len} exceeds the record", pos)
    if not 1 <= kind <= 5:
        raise FormatError(f"record kind {kind} is unknown", pos)
    record = Record(
        kind,
        seq,
        recv_ns,
        conn_id,
        buf[meta_start : meta_start + meta_len],
        buf[meta_start + meta_len : end],
    )
    return record, end + TAG_SIZE, digest


def peek_seq(buf: bytes, pos: int) -> int | None:
    """The sequence number field of the record at ``pos`` if its fixed part is present."""
    if pos + LEN_FIELD.size + BODY_FIELDS.size > len(buf):
        return None
    return BODY_FIELDS.unpack_from(buf, pos + LEN_FIELD.size)[1]


# --- checkpoints and footer -----------------------------------------------------------------


def checkpoint_payload(records_before: int, digest: bytes) -> bytes:
    return _CHECKPOINT.pack(records_before, digest)


def decode_checkpoint(payload: bytes) -> tuple[int, bytes]:
    if len(payload) != _CHECKPOINT.size:
        raise FormatError(f"checkpoint payload has {len(payload)} bytes, not {_CHECKPOINT.size}")
    return _CHECKPOINT.unpack(payload)


SEGMENT_END_META = canonical_json({"segment_end": True})


@dataclass(frozen=True)
class Footer:
    records: int  # records before the footer (data + checkpoints), i.e. the footer's seq
    counts: dict[str, int]  # per kind name, lower case: ws, rest, conn, checkpoint
    first_recv_ns: int | None
    last_recv_ns: int | None
    stop_exchange_ms: int | None  # exchange-time watermark at a clean stop; None if unknown
    clean: bool  # False when written by recover() after a crash
    segments: int

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "counts": dict(sorted(self.counts.items())),
            "first_recv_ns": self.first_recv_ns,
            "last_recv_ns": self.last_recv_ns,
            "stop_exchange_ms": self.stop_exchange_ms,
            "clean": self.clean,
            "segments": self.segments,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Footer:
        return cls(
            records=int(doc["records"]),
            counts={str(k): int(v) for k, v in doc["counts"].items()},
            first_recv_ns=doc["first_recv_ns"],
            last_recv_ns=doc["last_recv_ns"],
            stop_exchange_ms=doc["stop_exchange_ms"],
            clean=bool(doc["clean"]),
            segments=int(doc["segments"]),
        )


def empty_counts() -> dict[str, int]:
    return {k.name.lower(): 0 for k in RecordKind if k is not RecordKind.FOOTER}
