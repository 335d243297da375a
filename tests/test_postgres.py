"""PostgresResource against the PostgreSQL of the test services."""

from __future__ import annotations

import traceback
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from quant_resources.postgres import PostgresError, PostgresResource

INJECTION = "x'); DROP TABLE quant_injection_probe; -- \\ \" %s %(name)s"


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_connect_and_round_trip_through_a_temp_table(postgres_url) -> None:
    postgres = PostgresResource(url=postgres_url)
    with postgres.connect() as conn:
        conn.execute("CREATE TEMP TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO notes VALUES (%s, %s)", (1, INJECTION))
        conn.execute("INSERT INTO notes VALUES (%(id)s, %(body)s)", {"id": 2, "body": "plain"})
        rows = conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
    assert rows == [(1, INJECTION), (2, "plain")]


def test_execute_and_fetch_all_bind_values_verbatim(postgres_url) -> None:
    postgres = PostgresResource(url=postgres_url)
    table = sql.Identifier(f"t_{uuid.uuid4().hex[:12]}")
    postgres.execute(sql.SQL("CREATE TABLE {} (id int, body text)").format(table))
    try:
        inserted = postgres.execute(
            sql.SQL("INSERT INTO {} VALUES (%s, %s), (%s, %s)").format(table),
            (1, INJECTION, 2, "plain"),
        )
        assert inserted == 2
        rows = postgres.fetch_all(
            sql.SQL("SELECT id, body FROM {} WHERE body = %s").format(table), (INJECTION,)
        )
        assert rows == [(1, INJECTION)]
        # Each call commits: a second connection sees both rows.
        assert postgres.fetch_all(sql.SQL("SELECT count(*) FROM {}").format(table)) == [(2,)]
    finally:
        postgres.execute(sql.SQL("DROP TABLE {}").format(table))


def test_url_defaults_to_postgres_url_env(postgres_url, monkeypatch) -> None:
    monkeypatch.setenv("POSTGRES_URL", postgres_url)
    assert PostgresResource().fetch_all("SELECT current_database()") == [("quant",)]


def test_missing_url_is_an_error_naming_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("POSTGRES_URL", raising=False)
    with pytest.raises(PostgresError, match="POSTGRES_URL is not set"):
        PostgresResource().connect()


def test_wrong_password_error_does_not_contain_it(postgres_url) -> None:
    wrong = "Wr0ng-Pa55word-" + uuid.uuid4().hex[:8]
    postgres = PostgresResource(url=_with_password(postgres_url, wrong))
    with pytest.raises(PostgresError) as info:
        postgres.connect()
    message = str(info.value)
    assert "password authentication failed" in message
    assert "127.0.0.1" in message and "***" in message
    assert wrong not in "".join(traceback.format_exception(info.value))
    assert wrong not in repr(postgres) and wrong not in str(postgres)
    assert wrong not in postgres.display_url


def test_malformed_url_error_does_not_contain_the_password() -> None:
    secret = "Sup3r-" + uuid.uuid4().hex[:8]
    postgres = PostgresResource(url=f"postgresql://quant:{secret}@127.0.0.1:notaport/quant")
    with pytest.raises(PostgresError) as info:
        postgres.connect()
    assert secret not in "".join(traceback.format_exception(info.value))


def test_real_password_never_in_repr_or_display(postgres_url) -> None:
    password = urlsplit(postgres_url).password
    postgres = PostgresResource(url=postgres_url)
    assert password and password not in repr(postgres) and password not in postgres.display_url
    with postgres.connect() as conn:
        assert isinstance(conn, psycopg.Connection) and not conn.closed
