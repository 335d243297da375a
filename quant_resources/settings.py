"""Where each process finds its state and servers: environment first, embedded defaults second.

The embedded defaults (chDB and a Parquet folder under ``QUANT_HOME``) need no servers or keys.
They are defaults of *location*, never of data: a configured but unreachable server is an
error, not a reason to fall back to the embedded engine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dagster as dg

DEFAULT_DATABASE = "quant"
MASK = "***"
# Query parameters that carry a credential (password=, sslpassword=, access_token=, api_key=,
# X-Amz-Signature=, sig=, ...): matched anywhere in the name, case-insensitive. Masking a
# harmless parameter costs nothing; printing a secret one cannot be undone.
SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|sig|credential|auth", re.IGNORECASE)


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
