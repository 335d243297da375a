"""ClickHouse HTTP protocol pieces: request parameters, codecs, statements, errors.

Pure functions and small stateful codecs only; nothing here touches the engine or the network.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import lz4.frame
import zstandard

# Request parameters the HTTP layer consumes itself; everything else that is not a
# ``param_*`` binding is a query setting.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "enable_http_compression",
        "http_zlib_compression_level",
        "wait_end_of_query",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "buffer_size",
        "add_http_cors_header",
        "client_protocol_version",
        "role",
        "cancel_http_readonly_queries_on_client_close",
    }
)

DEFAULT_SESSION_TIMEOUT = 60.0
MAX_SESSION_TIMEOUT = 3600.0
_SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ClickHouse's error codes (resolved from system.errors) and the HTTP status ClickHouse's
# HTTPHandler maps each to; anything unlisted is a 500.
ERROR_CODES = {
    "AUTHENTICATION_FAILED": 516,
    "ACCESS_DENIED": 497,
    "UNKNOWN_SETTING": 115,
    "SESSION_NOT_FOUND": 372,
    "SESSION_IS_LOCKED": 373,
    "INVALID_SESSION_TIMEOUT": 374,
    "READONLY": 164,
    "SYNTAX_ERROR": 62,
    "UNKNOWN_COMPRESSION_METHOD": 89,
    "CANNOT_DECOMPRESS": 271,
    "LZ4_DECODER_FAILED": 618,
    "ZSTD_DECODER_FAILED": 561,
    "ZLIB_INFLATE_FAILED": 354,
    "STD_EXCEPTION": 1001,
    "ABORTED": 236,
    "QUERY_IS_TOO_LARGE": 229,
    "TIMEOUT_EXCEEDED": 159,
    "SOCKET_TIMEOUT": 209,
    "TOO_MANY_SIMULTANEOUS_QUERIES": 202,
    "TOO_MANY_ROWS_OR_BYTES": 396,
    "QUERY_WAS_CANCELLED": 394,
}
_STATUS_BY_CODE: dict[int, int] = {
    194: 401,
    **dict.fromkeys((192, 193, 516, 512, 497), 403),
    **dict.fromkeys(
        (
            *(36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8),
            *(167, 168, 223, 62, 117, 53, 321),
        ),
        400,
    ),
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78), 404),
    229: 413,
    48: 501,
    **dict.fromkeys((209, 76, 439), 503),
    381: 411,
    159: 408,
}
_CODE_RE = re.compile(r"Code: (\d+)\. ")
_NAME_TRAILER_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*(\(version [^)]*\))?\s*$")


class ClickHouseError(Exception):
    """An error to report the way ClickHouse does: code, message, symbolic name."""

    def __init__(self, code: int, message: str, name: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.name = name

    def body(self, version: str) -> str:
        """The ``Code: N. DB::Exception: ... (NAME) (version X)`` text of an error response."""
        text = self.message.strip()
        if not text.startswith("Code: "):
            text = f"Code: {self.code}. DB::Exception: {text}"
            if self.name:
                text = f"{text} ({self.name})"
        if "(version " not in text[-40:]:
            text = f"{text} (version {version})"
        return text + "\n"

    @property
    def http_status(self) -> int:
        return _STATUS_BY_CODE.get(self.code, 500)


def error(name: str, message: str) -> ClickHouseError:
    return ClickHouseError(ERROR_CODES[name], message, name)


def from_engine_exception(exc: BaseException) -> ClickHouseError:
    """Turn a chdb exception (whose text embeds ``Code: N. DB::Exception``) into an error."""
    if isinstance(exc, ClickHouseError):
        return exc
    text = str(exc)
    match = _CODE_RE.search(text)
    if match is None:
        return ClickHouseError(1001, f"{type(exc).__name__}: {text}", "STD_EXCEPTION")
    # chdb prefixes some messages ("Streaming insert finish failed: "); ClickHouse does not
    return ClickHouseError(int(match.group(1)), text[match.start() :])


def authentication_failed(user: str) -> ClickHouseError:
    return error(
        "AUTHENTICATION_FAILED",
        f"{user}: Authentication failed: password is incorrect, "
        "or there is no user with such name.",
    )


# ---- request parameters -------------------------------------------------------------------


@dataclass
class RequestParams:
    query: str | None = None
    database: str | None = None
    default_format: str = "TabSeparated"
    settings: dict[str, str] = field(default_factory=dict)
    bindings: dict[str, str] = field(default_factory=dict)
    query_id: str | None = None
    session_id: str | None = None
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    session_check: bool = False
    compress_response: bool = False
    wait_end_of_query: bool = False


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parse_params(params: Mapping[str, str]) -> RequestParams:
    """Split URL parameters into transport fields, ``param_*`` bindings and query settings."""
    out = RequestParams()
    for key, value in params.items():
        if key.startswith("param_"):
            out.bindings[key[6:]] = value
        elif key not in TRANSPORT_PARAMS:
            if not _SETTING_NAME_RE.match(key):
                raise error("UNKNOWN_SETTING", f"Unknown setting '{key}'")
            out.settings[key] = value
    out.query = params.get("query") or None
    out.database = params.get("database") or None
    out.default_format = params.get("default_format") or "TabSeparated"
    out.query_id = params.get("query_id") or None
    out.session_id = params.get("session_id") or None
    out.session_check = _flag(params.get("session_check"))
    if "session_timeout" in params:
        try:
            out.session_timeout = float(params["session_timeout"])
        except ValueError:
            raise error("INVALID_SESSION_TIMEOUT", "Invalid session timeout") from None
        if not 0 < out.session_timeout <= MAX_SESSION_TIMEOUT:
            raise error(
                "INVALID_SESSION_TIMEOUT",
                f"Session timeout '{params['session_timeout']}' is larger than "
                f"max_session_timeout: {MAX_SESSION_TIMEOUT:.0f}",
            )
    # ClickHouse only compresses responses when the query context asks for it
    out.compress_response = _flag(params.get("enable_http_compression"))
    out.wait_end_of_query = _flag(params.get("wait_end_of_query"))
    return out


def quote_setting_value(value: str) -> str:
    """A SQL string literal; ClickHouse coerces it to the setting's own type."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


# ---- statements ---------------------------------------------------------------------------

_LEADING_COMMENTS_RE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_USE_RE = re.compile(r"^USE\s+(`(?:[^`\\]|\\.)+`|\"(?:[^\"\\]|\\.)+\"|\w+)\s*;?\s*$", re.I)
_READ_ONLY_RE = re.compile(r"^(SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN)\b|^\(", re.I)
_FORMAT_RE = re.compile(
    r"\bFORMAT\s+(\w+)(?:\s+SETTINGS\s+[^;]*?)?\s*;?\s*$", re.IGNORECASE | re.DOTALL
)
_INSERT_FORMAT_RE = re.compile(
    rb"^\s*(INSERT\s+INTO\s.*?)\s+FORMAT\s+(\w+)[ \t]*(?:\r?\n)?", re.IGNORECASE | re.DOTALL
)


def strip_leading_comments(query: str) -> str:
    return query[_LEADING_COMMENTS_RE.match(query).end() :]


def use_statement(query: str) -> str | None:
    """The database of a ``USE db`` statement, unquoted; None for any other statement."""
    match = _USE_RE.match(strip_leading_comments(query))
    if match is None:
        return None
    name = match.group(1)
    if name[0] in '`"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


def is_read_only(query: str) -> bool:
    return _READ_ONLY_RE.match(strip_leading_comments(query)) is not None


_STREAMABLE_STATEMENT_RE = re.compile(r"^(SELECT|WITH)\b|^\(", re.I)


def is_select(query: str) -> bool:
    """Whether chdb can stream the statement (SHOW, EXISTS, DESCRIBE... it cannot)."""
    return _STREAMABLE_STATEMENT_RE.match(strip_leading_comments(query)) is not None


def output_format(query: str, default: str) -> str:
    """The FORMAT a query's result is written in: its own clause, else ``default_format``."""
    match = _FORMAT_RE.search(query)
    return match.group(1) if match else default


@dataclass(frozen=True)
class InsertHead:
    """An ``INSERT ... FORMAT f`` statement whose rows follow at ``data_offset``."""

    statement: str
    fmt: str
    data_offset: int


def insert_head(text: bytes) -> InsertHead | None:
    """Parse an INSERT whose data follows its FORMAT clause (as ClickHouse does: spaces and
    at most one newline after the format name separate the statement from the data)."""
    match = _INSERT_FORMAT_RE.match(text)
    if match is None:
        return None
    return InsertHead(match.group(1).decode(), match.group(2).decode(), match.end())


# ---- formats ------------------------------------------------------------------------------

# chdb's send_query encodes each block on its own; concatenating the pieces is a valid result
# only for formats without a header or footer. ArrowStream is joined by ArrowStreamJoiner.
STREAMABLE_FORMATS = frozenset(
    {
        "native",
        "rowbinary",
        "tabseparated",
        "tsv",
        "tabseparatedraw",
        "tsvraw",
        "csv",
        "jsoneachrow",
        "jsonlines",
        "ndjson",
        "jsoncompacteachrow",
        "jsonstringseachrow",
        "lineasstring",
        "arrowstream",
    }
)


def content_type(fmt: str) -> str:
    lower = fmt.lower()
    if lower.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lower.startswith("csv"):
        return "text/csv; charset=UTF-8; header=" + ("present" if "names" in lower else "absent")
    if lower.endswith("eachrow") or lower in ("jsonlines", "ndjson"):
        return "application/x-ndjson; charset=UTF-8"
    if lower.startswith("json"):
        return "application/json; charset=UTF-8"
    if lower in ("xml",):
        return "application/xml; charset=UTF-8"
    if lower.startswith(("pretty", "vertical", "markdown", "values", "lineasstring")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


_ARROW_CONTINUATION = b"\xff\xff\xff\xff"
_ARROW_EOS = _ARROW_CONTINUATION + b"\x00\x00\x00\x00"


class ArrowStreamJoiner:
    """Joins chdb's per-block ArrowStream pieces (each schema + batches + end marker) into one
    IPC stream: the schema message of later pieces and every end marker but the last go."""

    def __init__(self) -> None:
        self._first = True

    def feed(self, piece: bytes) -> bytes:
        if piece.endswith(_ARROW_EOS):
            piece = piece[: -len(_ARROW_EOS)]
        if self._first:
            self._first = False
            return piece
        if not piece.startswith(_ARROW_CONTINUATION):
            raise error("STD_EXCEPTION", "Unexpected ArrowStream block from the engine")
        metadata_len = int.from_bytes(piece[4:8], "little")
        return piece[8 + metadata_len :]  # the schema message carries no body

    def finish(self) -> bytes:
        return _ARROW_EOS


# ---- compression --------------------------------------------------------------------------


_DECODE_PIECE = 1 << 20


class BodyDecoder:
    """Incremental decoder for a request's Content-Encoding. Handles several concatenated
    frames (lz4, zstd) or members (gzip), as clickhouse-connect sends one per block.

    Decoded bytes go to ``sink`` in pieces of at most about a MiB, never the whole expansion of
    a chunk at once: a sink that raises (a size limit) stops a decompression bomb right there.
    """

    def __init__(self, encoding: str | None, sink: Callable[[bytes], object]):
        self.encoding = (encoding or "identity").strip().lower()
        self._sink = sink
        self._dec = None
        if self.encoding not in ("identity", "", "lz4", "zstd", "gzip", "deflate"):
            raise error("UNKNOWN_COMPRESSION_METHOD", f"Unknown compression method: {encoding}")
        if self.encoding == "zstd":
            # zstandard's decompressobj has no output bound; its stream writer hands the
            # sink bounded pieces. It does not say where frames end, so ZstdFrames does.
            self._zstd = zstandard.ZstdDecompressor().stream_writer(
                _SinkWriter(sink), write_size=_DECODE_PIECE, closefd=False
            )
            self._frames = ZstdFrames()

    def _new(self):
        if self.encoding == "lz4":
            return lz4.frame.LZ4FrameDecompressor()
        return zlib.decompressobj(31 if self.encoding == "gzip" else 15)

    def _failure(self, exc: Exception) -> ClickHouseError:
        name = {"lz4": "LZ4_DECODER_FAILED", "zstd": "ZSTD_DECODER_FAILED"}.get(
            self.encoding, "ZLIB_INFLATE_FAILED"
        )
        return error(name, f"Cannot decompress {self.encoding} request body: {exc}")

    def feed(self, data: bytes) -> None:
        if self.encoding in ("identity", ""):
            if data:
                self._sink(data)
            return
        try:
            if self.encoding == "zstd":
                self._frames.feed(data)
                self._zstd.write(data)
            else:
                self._feed_frames(data)
        except ClickHouseError:
            raise
        except Exception as exc:
            raise self._failure(exc) from exc

    def _feed_frames(self, data: bytes) -> None:
        lz4_frames = self.encoding == "lz4"
        while data or self._dec is not None:
            if self._dec is None:
                self._dec = self._new()
            out = self._dec.decompress(data, _DECODE_PIECE)
            if out:
                self._sink(out)
            if self._dec.eof:
                data, self._dec = self._dec.unused_data, None
            elif lz4_frames:
                if self._dec.needs_input:
                    return
                data = b""
            else:
                data = self._dec.unconsumed_tail
                if not data and len(out) < _DECODE_PIECE:
                    return

    def finish(self) -> None:
        """Fail on a body that ends inside a frame."""
        truncated = (
            not self._frames.at_boundary() if self.encoding == "zstd" else self._dec is not None
        )
        if truncated:
            raise self._failure(ValueError("truncated compressed data"))


class _SinkWriter:
    def __init__(self, sink: Callable[[bytes], object]):
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink(bytes(data))
        return len(data)


_ZSTD_MAGIC = 0xFD2FB528
_FCS_SIZES = (0, 2, 4, 8)
_DID_SIZES = (0, 1, 2, 4)


class ZstdFrames:
    """Walks the frame and block headers of a zstd stream (RFC 8878) without decoding it, to
    tell whether the stream ends between frames: the decoder cannot say."""

    def __init__(self) -> None:
        self._buf = b""
        self._skip = 0
        # what the next bytes are: "magic", "skippable", "header", "block", "checksum"
        self._state = "magic"
        self._checksum = False

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            need = self._needed()
            take = min(need - len(self._buf), n - pos)
            self._buf += data[pos : pos + take]
            pos += take
            if len(self._buf) == need:
                self._advance()

    def _needed(self) -> int:
        if self._state in ("magic", "skippable", "checksum"):
            return 4
        if self._state == "block":
            return 3
        if not self._buf:  # "header": its first byte says how long it is
            return 1
        fhd = self._buf[0]
        single = (fhd >> 5) & 1
        fcs = _FCS_SIZES[fhd >> 6] or single
        return 1 + (0 if single else 1) + _DID_SIZES[fhd & 3] + fcs

    def _advance(self) -> None:
        buf, self._buf = self._buf, b""
        if self._state == "magic":
            magic = int.from_bytes(buf, "little")
            if magic == _ZSTD_MAGIC:
                self._state = "header"
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._state = "skippable"
            else:
                raise ValueError("unknown zstd frame magic")
        elif self._state == "skippable":
            self._skip = int.from_bytes(buf, "little")
            self._state = "magic"
        elif self._state == "header":
            if len(buf) == 1:  # the descriptor alone; a header is at least two bytes
                self._buf = buf
                return
            self._checksum = bool((buf[0] >> 2) & 1)
            self._state = "block"
        elif self._state == "block":
            header = int.from_bytes(buf, "little")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                raise ValueError("reserved zstd block type")
            self._skip = 1 if kind == 1 else size
            if last:
                self._state = "checksum" if self._checksum else "magic"
        else:  # checksum
            self._state = "magic"

    def at_boundary(self) -> bool:
        return self._state == "magic" and not self._buf and not self._skip


# ClickHouse's own preference when a client accepts several encodings
_RESPONSE_ENCODINGS = ("zstd", "lz4", "gzip", "deflate")


def choose_response_encoding(accept_encoding: str | None) -> str | None:
    offered = {part.split(";")[0].strip().lower() for part in (accept_encoding or "").split(",")}
    return next((name for name in _RESPONSE_ENCODINGS if name in offered), None)


class BodyEncoder:
    """One compressed stream per response, flushed after every chunk so each piece is
    decodable as soon as it arrives."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        if encoding == "lz4":
            self._lz4 = lz4.frame.LZ4FrameCompressor(auto_flush=True)
            self._head = self._lz4.begin()
        elif encoding == "zstd":
            self._zstd = zstandard.ZstdCompressor(level=1).compressobj()
        elif encoding in ("gzip", "deflate"):
            self._zlib = zlib.compressobj(3, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
        else:
            raise ValueError(encoding)

    def compress(self, data: bytes) -> bytes:
        if self.encoding == "lz4":
            out, self._head = self._head + self._lz4.compress(data), b""
            return out
        if self.encoding == "zstd":
            return self._zstd.compress(data) + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        if self.encoding == "lz4":
            return self._head + self._lz4.flush()
        if self.encoding == "zstd":
            return self._zstd.flush()
        return self._zlib.flush()
