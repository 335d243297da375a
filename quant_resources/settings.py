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


def redis_url() -> str | None:
    """``REDIS_URL`` (``redis://:password@host:6379/0``) or None: the latest-value store is
    optional, readers fall back to the warehouse without it."""
    return os.environ.get("REDIS_URL") or None


def _csv(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def _positive_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{name}={text!r} must be a positive integer")
    return int(text)


def api_tokens() -> list[str]:
    """Bearer tokens the data service accepts (``QUANT_API_TOKENS``, comma-separated)."""
    return _csv("QUANT_API_TOKENS")


def api_cors_origins() -> list[str]:
    """Browser origins allowed to call the data service (``QUANT_API_CORS_ORIGINS``)."""
    return _csv("QUANT_API_CORS_ORIGINS")


def api_page_size() -> int:
    """Rows a page of ``/v1/bars`` holds when the request names no ``limit``."""
    return _positive_int("QUANT_API_PAGE_SIZE", 10_000)


def api_max_page_size() -> int:
    """The largest ``limit`` a request may ask for."""
    return _positive_int("QUANT_API_MAX_PAGE_SIZE", 100_000)


def api_max_range_days() -> int:
    """The longest ``end - start`` a request may span, in days."""
    return _positive_int("QUANT_API_MAX_RANGE_DAYS", 366)
