"""Order books in a session log: the record shapes the kernel's books
(``quant_core.kernel_books``, which lists what is recorded and in which order) and the capture
importer agree on (no I/O).

A third-party capture records depth frames and REST answers but no request ids and no settings:
its answers are taken for the request pending for their symbol, with the default settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from quant_core.depth_decode import DEPTH_PATH

BOOKS_EVENT = "books"
DEPTH_CONNECT = "depth_connect"
DEFAULT_DEPTH = 20
DEFAULT_INTERVAL_MS = 1000
DEPTH_STREAM_KINDS = ("depth", "depth1s")  # our stream names (depth@100ms and depth on the wire)


def has_depth(streams: Sequence[str]) -> bool:
    """Whether a configuration or session header subscribes to depth (either name form)."""
    return any(s.rsplit("@", 1)[-1] in DEPTH_STREAM_KINDS or "@depth" in s for s in streams)


def is_depth_frame(raw: bytes) -> bool:
    """A combined-stream depth frame (``{"stream":"<symbol>@depth...``): the stream name sits in
    the first bytes of every frame Binance sends."""
    return b"@depth" in bytes(raw[:64])


def captured_snapshot_meta(payload: bytes, streams: Sequence[str]) -> dict[str, Any] | None:
    """The ``rest`` record meta for a capture line that is a bare ``/api/v3/depth`` answer (a
    ``{"lastUpdateId": ...}`` object), or None for any other line. The answer names no symbol:
    it is the only depth symbol's of ``streams`` (the streams of the file that holds it). With
    several, the meta has no symbol: the record is kept and counted, never applied to a book
    it may not belong to."""
    if not bytes(payload[:20]).lstrip().startswith(b'{"lastUpdateId"'):
        return None
    symbols = {s.split("@", 1)[0].upper() for s in streams if "@depth" in s}
    meta: dict[str, Any] = {"path": DEPTH_PATH, "origin": "capture"}
    if len(symbols) == 1:
        meta["symbol"] = symbols.pop()
    return meta


def requested_snapshot_meta(url: str) -> dict[str, Any] | None:
    """The ``rest`` record meta for a captured REST answer to ``url`` when it is a
    ``/api/v3/depth`` request (attributed to the ``symbol`` it asked for), else None."""
    parts = urlsplit(url)
    if not parts.path.endswith(DEPTH_PATH):
        return None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    symbol = query.get("symbol", "").upper()
    if not symbol:
        return None
    params: dict[str, Any] = {"symbol": symbol}
    if query.get("limit", "").isdigit():
        params["limit"] = int(query["limit"])
    return {"path": DEPTH_PATH, "symbol": symbol, "params": params, "origin": "capture"}


def books_meta(depth: int, interval_ms: int, limit: int) -> dict[str, Any]:
    return {"event": BOOKS_EVENT, "depth": depth, "interval_ms": interval_ms, "limit": limit}
