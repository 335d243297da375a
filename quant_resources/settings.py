"""Where each process finds its state and servers: environment first, embedded defaults second.

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
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import dagster as dg

DEFAULT_DATABASE = "quant"
# Files the local warehouse endpoint keeps in its data directory, both mode 0600
PASSWORD_FILE = ".quant-password"
ENDPOINT_FILE = ".quant-endpoint.json"


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
