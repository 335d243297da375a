"""Where each process finds its state and servers: environment first, embedded defaults second.

The one module that reads environment variables: every other module asks a function here, so
the variables a process honours are listed in one place (and in README's table). Secrets are
returned to the code that needs them and never logged here.

The embedded defaults (chDB and a Parquet folder under ``QUANT_HOME``) need no servers or keys.
They are defaults of *location*, never of data: a configured but unreachable server is an
error, not a reason to fall back to the embedded engine.

The warehouse's embedded default is ``QUANT_HOME/warehouse``: the local endpoint
(``quant warehouse serve``) when one serves it, chDB in-process otherwise. The endpoint
describes itself in that directory (``ENDPOINT_FILE``, mode 0600, with its generated password).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

DEFAULT_DATABASE = "quant"
# Files the local warehouse endpoint keeps in its data directory, both mode 0600
PASSWORD_FILE = ".quant-password"
ENDPOINT_FILE = ".quant-endpoint.json"
MASK = "***"
# Query parameters that carry a credential (password=, sslpassword=, access_token=, api_key=,
# X-Amz-Signature=, sig=, ...): matched anywhere in the name, case-insensitive. Masking a
# harmless parameter costs nothing; printing a secret one cannot be undone.
SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|sig|credential|auth", re.IGNORECASE)


def quant_home() -> Path:
    return Path(os.environ.get("QUANT_HOME") or ".quant").resolve()


def warehouse_dir() -> Path:
    """The embedded warehouse's data directory, served by ``quant warehouse serve``."""
    return quant_home() / "warehouse"


def local_endpoint_url(directory: Path | None = None, timeout: float = 1.0) -> str | None:
    """The URL of the endpoint serving ``directory`` (default: ``warehouse_dir()``), if its
    endpoint file names one that answers ``/ping``; else None."""
    path = (directory or warehouse_dir()) / ENDPOINT_FILE
    try:
        endpoint = json.loads(path.read_text())
        host, port = str(endpoint["host"]), int(endpoint["port"])
        user, password = str(endpoint["user"]), str(endpoint["password"])
        # A server killed without cleanup leaves its file behind; its port may now be another's
        os.kill(int(endpoint["pid"]), 0)
    except PermissionError:
        pass  # alive, under another user
    except (OSError, ValueError, KeyError, TypeError):
        return None
    address = f"[{host}]" if ":" in host else host
    try:
        # A direct connection: the endpoint is local, never behind a proxy
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{address}:{port}/ping", timeout=timeout) as response:
            if response.read() != b"Ok.\n":
                return None
    except OSError:
        return None
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return f"http://{credentials}@{address}:{port}/{DEFAULT_DATABASE}"


def default_clickhouse_url() -> str:
    """The running local endpoint, else chDB in-process on the same directory."""
    return local_endpoint_url() or f"chdb://{warehouse_dir()}?database={DEFAULT_DATABASE}"


def clickhouse_url() -> str:
    return os.environ.get("CLICKHOUSE_URL") or default_clickhouse_url()


def setting(name: str, default: str | None = None) -> str | None:
    """The variable's value, or ``default`` when it is unset or empty."""
    return os.environ.get(name) or default


def lake_url() -> str:
    return setting("LAKE_URL") or f"file://{quant_home() / 'lake'}"


def postgres_url() -> str | None:
    return setting("POSTGRES_URL")


def aws_region() -> str | None:
    """``AWS_REGION`` (botocore itself reads only ``AWS_DEFAULT_REGION``)."""
    return setting("AWS_REGION")


def alpaca_keys() -> tuple[str | None, str | None]:
    return setting("ALPACA_API_KEY"), setting("ALPACA_SECRET_KEY")


def alpaca_data_url() -> str | None:
    return setting("ALPACA_DATA_URL")


def migrations_dir() -> str | None:
    return setting("QUANT_MIGRATIONS_DIR")


def clickhouse_cluster() -> str | None:
    """``QUANT_CLICKHOUSE_CLUSTER``: the cluster the ClickHouse migrations are rendered for
    (``ON CLUSTER`` and Replicated engines); None on a single server."""
    return setting("QUANT_CLICKHOUSE_CLUSTER")


def binance_ws_url(default: str) -> str:
    return setting("BINANCE_WS_URL", default)


def binance_rest_url(default: str) -> str:
    return setting("BINANCE_REST_URL", default)


def nats_url() -> str | None:
    return setting("NATS_URL")


def history_start() -> str:
    return setting("QUANT_HISTORY_START", "2016-01-04")


def equity_symbols_text() -> str | None:
    return setting("QUANT_EQUITY_SYMBOLS")


def universe_file() -> str | None:
    return setting("QUANT_UNIVERSE_FILE")


def option_underlyings_text() -> str:
    return setting("QUANT_OPTION_UNDERLYINGS", "SPY,QQQ")


def equity_source_text() -> str:
    return (setting("QUANT_EQUITY_SOURCE") or "").strip().lower()


def max_missing_ratio() -> float:
    return float(setting("QUANT_MAX_MISSING_RATIO", "0.05"))


def live_symbols() -> str:
    return setting("QUANT_LIVE_SYMBOLS", "btcusdt,ethusdt")


def live_autostart() -> bool:
    return setting("QUANT_LIVE_AUTOSTART") == "1"


def demo_live_seconds() -> float:
    return float(setting("QUANT_DEMO_LIVE_SECONDS", "60"))


def sim_alpaca_credentials() -> tuple[str, str]:
    """The key pair ``quant sim alpaca`` accepts (a local simulator's, not a real secret)."""
    return setting("QUANT_SIM_ALPACA_KEY", "test"), setting("QUANT_SIM_ALPACA_SECRET", "test")


def env_or(name: str, default: str | None):
    """An ``EnvVar`` when the variable is set (so Dagster shows its name, never its value),
    else the embedded default."""
    import dagster as dg  # here: every `quant` command imports this module, few need Dagster

    return dg.EnvVar(name) if os.environ.get(name) else default


def redact_url(url: str) -> str:
    """The URL with its password and every credential-like query parameter replaced, for
    logs, metadata and error messages."""
    parts = urlsplit(url)
    changed = parts
    if parts.password is not None:
        netloc = f"{parts.username or ''}:{MASK}@{parts.hostname or ''}"
        if parts.port:
            netloc += f":{parts.port}"
        changed = changed._replace(netloc=netloc)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        masked = [(k, MASK if SECRET_PARAM.search(k) and v else v) for k, v in pairs]
        if masked != pairs:
            changed = changed._replace(query=urlencode(masked, safe="*/:"))
    # Rebuilt only when something was masked: urlunsplit drops the empty authority of
    # chdb:///dir, which is not ours to change.
    return url if changed == parts else urlunsplit(changed)


def masked_repr_args(
    args: Iterable[tuple[str | None, Any]],
    *,
    urls: tuple[str, ...] = (),
    secrets: tuple[str, ...] = (),
) -> Iterator[tuple[str | None, Any]]:
    """A pydantic ``__repr_args__`` with the ``urls`` fields redacted and the ``secrets``
    fields masked: ``repr`` and ``str`` of a resource never show a credential."""
    for name, value in args:
        if name in secrets and value:
            yield name, MASK
        elif name in urls and isinstance(value, str):
            try:
                yield name, redact_url(value)
            except ValueError:  # unparseable (e.g. a non-numeric port): show nothing of it
                yield name, MASK
        else:
            yield name, value


DEFAULT_BINANCE_ARCHIVE_URL = "https://data.binance.vision"


def binance_archive_url() -> str:
    """Base URL of Binance's public data archive (``BINANCE_ARCHIVE_URL``, a bare base such as
    the local ``quant sim binance-archive``), without a trailing slash."""
    url = (os.environ.get("BINANCE_ARCHIVE_URL") or DEFAULT_BINANCE_ARCHIVE_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError(f"BINANCE_ARCHIVE_URL={redact_url(url)!r} is not a bare http(s) base URL")
    return url


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


def crypto_history_start() -> str:
    """First UTC day of the crypto_history partitions (``QUANT_CRYPTO_HISTORY_START``)."""
    return setting("QUANT_CRYPTO_HISTORY_START", "2024-01-01")


def crypto_symbols() -> list[str]:
    """The crypto_history universe (``QUANT_CRYPTO_SYMBOLS``, default BTCUSDT,ETHUSDT)."""
    return [s.upper() for s in _csv("QUANT_CRYPTO_SYMBOLS")] or ["BTCUSDT", "ETHUSDT"]
