"""``PostgresResource``: the platform metadata database through psycopg 3.

``POSTGRES_URL`` (``postgresql://user:password@host:port/db``) is required: PostgreSQL has no
embedded form, so a missing URL is an error, never a fallback. Values are always bound by the
server (psycopg placeholders ``%s`` / ``%(name)s``); SQL text is never built from values.
The password never leaves this module: not in ``repr``, logs or error messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import dagster as dg
import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field

from quant_resources.settings import postgres_url, redact_url

Query = str | pgsql.Composable
Params = Sequence[Any] | Mapping[str, Any] | None


class PostgresError(RuntimeError):
    """PostgreSQL is not configured or not reachable; the message never holds the password."""


def _passwords(url: str) -> set[str]:
    """Every spelling of the password in ``url`` (a URI or a libpq ``key=value`` string)."""
    found = set()
    with contextlib.suppress(psycopg.Error):  # malformed: URL parsing below still applies
        found.add(conninfo_to_dict(url).get("password") or "")
    raw = urlsplit(url).password if "://" in url else None
    found |= {raw or "", unquote(raw or "")}
    return found - {""}


def _mask(text: str, url: str) -> str:
    """``text`` with the password of ``url`` replaced by ``***``."""
    for secret in sorted(_passwords(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _display(url: str) -> str:
    try:
        shown = redact_url(url)
    except ValueError:  # e.g. a non-numeric port
        shown = "<unparseable POSTGRES_URL>"
    return _mask(shown, url)


class PostgresResource(dg.ConfigurableResource):
    """Platform metadata in PostgreSQL. ``url`` defaults to the ``POSTGRES_URL`` variable."""

    url: str | None = Field(
        default=None, description="postgresql://user:password@host:port/db (POSTGRES_URL)"
    )
    connect_timeout: int = Field(default=10, description="Seconds to wait for a connection.")

    @property
    def resolved_url(self) -> str:
        url = self.url or postgres_url()
        if not url:
            raise PostgresError(
                "POSTGRES_URL is not set: point it at the platform metadata database "
                "(postgresql://user:password@host:5432/quant); there is no embedded fallback"
            )
        return url

    @property
    def display_url(self) -> str:
        return _display(self.resolved_url)

    def __repr_args__(self):
        # pydantic's repr (and str) would print the URL, password included; _display also
        # masks libpq key=value strings, which redact_url does not parse.
        for name, value in super().__repr_args__():
            yield name, (_display(value) if name == "url" and isinstance(value, str) else value)

    def connect(self) -> psycopg.Connection:
        """A new connection; use it as a context manager (commits on success, rolls back on
        error, then closes)."""
        url = self.resolved_url
        try:
            return psycopg.connect(url, connect_timeout=self.connect_timeout)
        except psycopg.Error as exc:
            # `from None`: the original message may quote the connection string, password included.
            raise PostgresError(
                f"cannot connect to PostgreSQL at {_display(url)}: {_mask(str(exc).strip(), url)}"
            ) from None

    def execute(self, sql: Query, params: Params = None) -> int:
        """Run one statement in its own transaction; returns the affected row count."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.rowcount

    def fetch_all(self, sql: Query, params: Params = None) -> list[tuple]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
