"""Where each process finds its state and servers: environment first, embedded defaults second.

The embedded defaults (chDB and a Parquet folder under ``QUANT_HOME``) need no servers or keys.
They are defaults of *location*, never of data: a configured but unreachable server is an
error, not a reason to fall back to the embedded engine.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg

DEFAULT_DATABASE = "quant"


def quant_home() -> Path:
    return Path(os.environ.get("QUANT_HOME") or ".quant").resolve()


def default_clickhouse_url() -> str:
    return f"chdb://{quant_home() / 'chdb'}?database={DEFAULT_DATABASE}"


def clickhouse_url() -> str:
    return os.environ.get("CLICKHOUSE_URL") or default_clickhouse_url()


def env_or(name: str, default: str | None) -> str | dg.EnvVar | None:
    """An ``EnvVar`` when the variable is set (so Dagster shows its name, never its value),
    else the embedded default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs, metadata and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


DEFAULT_BINANCE_ARCHIVE_URL = "https://data.binance.vision"


def binance_archive_url() -> str:
    """Base URL of Binance's public data archive (``BINANCE_ARCHIVE_URL``, a bare base such as
    the local ``quant sim binance-archive``), without a trailing slash."""
    url = (os.environ.get("BINANCE_ARCHIVE_URL") or DEFAULT_BINANCE_ARCHIVE_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError(f"BINANCE_ARCHIVE_URL={redact_url(url)!r} is not a bare http(s) base URL")
    return url
