"""A local ClickHouse-compatible HTTP endpoint backed by chDB (``quant warehouse serve``).

Processes that must share one chDB data directory talk to it with the ordinary
clickhouse-connect HTTP client, exactly as they would to a ClickHouse server. It is closed by
default: a password always (``credentials``), no statement reaching the host (``policy``), Host
and CORS rules (``access``).
"""

from __future__ import annotations

from quant_dev.warehouse_server.credentials import EmptyPassword
from quant_dev.warehouse_server.serve import AlreadyServing, lock_directory, serve

__all__ = ["AlreadyServing", "EmptyPassword", "lock_directory", "serve"]
