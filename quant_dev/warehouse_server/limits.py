"""What one client may cost the warehouse server: sizes, timeouts, concurrency.

Every limit is per request or per connection, never per row, so the fast paths pay nothing for
them. ``quant warehouse serve`` sets each from its option or its ``QUANT_WAREHOUSE_<NAME>``
environment variable (``env_name``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    # Request bodies: bytes on the wire, bytes after Content-Encoding, and the cap for a body
    # that is a query text rather than an INSERT's rows
    max_body_bytes: int = 1 * GiB
    max_decompressed_bytes: int = 4 * GiB
    max_query_bytes: int = 16 * MiB
    # Every query is cancelled after this many seconds; clients may ask for less, never more
    max_execution_time: float = 300.0
    # chDB queries running at once; a request waits (up to max_execution_time) for a slot
    max_concurrent_queries: int = 8
    # A streamed result the client reads slower than chDB produces it is buffered here: in
    # memory, then in a file in the server's spool directory, then the query fails
    result_memory_bytes: int = 256 * MiB
    result_spool_bytes: int = 4 * GiB
    # Connections: open at once, seconds to send a request's headers, seconds idle between
    # requests (keep-alive), seconds a request body may pause or a response wait for its reader
    max_connections: int = 4096
    header_timeout: float = 10.0
    idle_timeout: float = 5.0
    body_timeout: float = 60.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not value > 0:
                raise ValueError(f"warehouse limit {item.name} must be positive, got {value!r}")
