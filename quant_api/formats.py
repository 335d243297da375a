"""Content negotiation: Arrow IPC stream, Parquet or JSON, chosen by the ``Accept`` header."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import Response

from quant_api.errors import ApiError

ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
JSON = "application/json"
_ALIASES = {"application/x-parquet": PARQUET, "application/*": JSON, "*/*": JSON}
SUPPORTED = (JSON, ARROW, PARQUET)
BINARY = {"schema": {"type": "string", "format": "binary"}}


def negotiate(accept: str | None) -> str:
    """The supported media type the client ranks highest (JSON when it does not care)."""
    if not accept or not accept.strip():
        return JSON
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = _ALIASES.get(media.lower(), media.lower())
        if media in SUPPORTED and quality > 0:
            ranked.append((-quality, position, media))
    if not ranked:
        raise ApiError(
            406,
            f"Accept={accept[:120]!r}: none of the supported types {', '.join(SUPPORTED)}",
            "Accept",
            accept,
        )
    return min(ranked)[2]


def table_response(table: pa.Table, media: str, headers: dict[str, str]) -> Response:
    """An Arrow table as an IPC stream or a Parquet file."""
    sink = pa.BufferOutputStream()
    if media == ARROW:
        # ZSTD-compressed buffers (readers decompress transparently): a seventh of the bytes
        # of bars, and faster to write and read than pyarrow's LZ4 frame codec.
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
            writer.write_table(table)
    else:
        pq.write_table(table, sink)
    return Response(memoryview(sink.getvalue()), media_type=media, headers=headers)
