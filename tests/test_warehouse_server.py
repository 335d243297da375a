"""``quant warehouse serve`` against an unmodified clickhouse-connect client.

Client-level tests run twice: through the HTTP endpoint (a real server subprocess) and through
clickhouse-connect's in-process ``chdb://`` path, which must behave the same.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import secrets
import time
import zlib
from datetime import UTC, datetime

import lz4.frame
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import zstandard
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.warehouse_fixtures import WarehouseServer

pytestmark = pytest.mark.xdist_group("warehouse_server")

BARS_DDL = (
    "CREATE TABLE {table} (source LowCardinality(String), symbol LowCardinality(String), "
    "ts DateTime64(3, 'UTC'), open Float64, high Float64, low Float64, close Float64, "
    "volume Float64, trade_count UInt32) ENGINE = MergeTree ORDER BY (source, symbol, ts) "
    "SETTINGS non_replicated_deduplication_window = 100"
)
BAR_COLUMNS = ["source", "symbol", "ts", "open", "high", "low", "close", "volume", "trade_count"]


def bar_rows(n: int, symbol: str = "AAPL", start: int = 0) -> list[list]:
    base = datetime(2024, 1, 2, tzinfo=UTC).timestamp()
    rows = []
    for i in range(n):
        ts = datetime.fromtimestamp(base + 60 * (start + i), UTC)
        rows.append(["test", symbol, ts, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 10.0 * i, i])
    return rows


def bars_arrow(n: int, symbol: str = "MSFT") -> pa.Table:
    start = int(datetime(2024, 1, 2, tzinfo=UTC).timestamp() * 1000)
    ts = pa.array(range(start, start + n * 60_000, 60_000), pa.timestamp("ms", tz="UTC"))
    price = pa.array([float(i) for i in range(n)])
    return pa.table(
        {
            "source": ["test"] * n,
            "symbol": [symbol] * n,
            "ts": ts,
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "volume": price,
            "trade_count": pa.array(range(n), pa.uint32()),
        }
    )


# ---- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = WarehouseServer(tmp_path_factory.mktemp("warehouse"), "quant", secrets.token_hex(12))
    srv.start()
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def chdb_client(chdb_dir):
    import clickhouse_connect

    # chdb hosts one engine per process: every in-process test shares the session's directory
    # (never the server's, which another process owns).
    dsn = f"chdb://{chdb_dir}"
    client = clickhouse_connect.get_client(dsn=dsn)
    client.test_dsn = dsn
    yield client
    client.close()


@pytest.fixture(params=["http", "chdb"])
def backend(request, server):
    return request.param


@pytest.fixture
def client(backend, server, chdb_client):
    if backend == "chdb":
        yield chdb_client
        return
    http_client = server.client()
    yield http_client
    http_client.close()


@pytest.fixture
def db(client):
    name = f"t_{secrets.token_hex(4)}"
    client.command(f"CREATE DATABASE {name}")
    yield name
    client.command(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def bars(client, db):
    table = f"{db}.bars"
    client.command(BARS_DDL.format(table=table))
    return table


def other_client(backend, server, chdb_client, **kwargs):
    """A second client of the same backend with its own options."""
    if backend == "chdb":
        import clickhouse_connect

        return clickhouse_connect.get_client(dsn=chdb_client.test_dsn, **kwargs)
    return server.client(**kwargs)


# ---- client-level, both backends ----------------------------------------------------------


def test_ping_version_and_ddl(client, db):
    assert client.ping()
    version, timezone = client.command("SELECT version(), timezone()")
    assert version == client.server_version
    assert timezone in ("UTC", "Etc/UTC")
    client.command(f"CREATE TABLE {db}.kv (k String, v UInt64) ENGINE = MergeTree ORDER BY k")
    assert client.command(f"EXISTS TABLE {db}.kv") == 1
    client.command(f"INSERT INTO {db}.kv VALUES ('a', 1), ('b', 2)")
    assert client.command(f"SELECT sum(v) FROM {db}.kv") == 3


def test_database_parameter_and_per_client_database(backend, server, chdb_client, client, db):
    client.command(f"CREATE TABLE {db}.only_here (x UInt8) ENGINE = Memory")
    scoped = other_client(backend, server, chdb_client, database=db)
    try:
        assert scoped.command("SELECT currentDatabase()") == db
        scoped.command("INSERT INTO only_here VALUES (7)")
        assert scoped.query("SELECT x FROM only_here").result_rows == [(7,)]
    finally:
        if backend == "http":
            scoped.close()
    assert client.command("SELECT currentDatabase()") == "default"
    with pytest.raises(DatabaseError) as err:
        client.query("SELECT x FROM only_here")
    assert err.value.code == 60


def test_inserts_and_every_read_format(client, bars):
    client.insert(bars, bar_rows(3), column_names=BAR_COLUMNS)
    client.insert_arrow(bars, bars_arrow(4))
    df = pd.DataFrame(bar_rows(2, symbol="NVDA"), columns=BAR_COLUMNS)
    client.insert_df(bars, df)

    counts = client.query(f"SELECT symbol, count() FROM {bars} GROUP BY symbol ORDER BY symbol")
    assert counts.result_rows == [("AAPL", 3), ("MSFT", 4), ("NVDA", 2)]

    first = client.query(f"SELECT * FROM {bars} WHERE symbol = 'AAPL' ORDER BY ts LIMIT 1")
    assert first.column_names == tuple(BAR_COLUMNS)
    row = first.result_rows[0]
    assert row[:2] == ("test", "AAPL")
    assert row[2].replace(tzinfo=UTC) == datetime(2024, 1, 2, tzinfo=UTC)
    assert row[3:] == (100.0, 101.0, 99.0, 100.5, 0.0, 0)

    table = client.query_arrow(f"SELECT symbol, trade_count FROM {bars} ORDER BY symbol, ts")
    assert table.num_rows == 9
    assert table.column("trade_count").to_pylist() == [0, 1, 2, 0, 1, 2, 3, 0, 1]

    frame = client.query_df(f"SELECT symbol, close FROM {bars} WHERE symbol = 'MSFT' ORDER BY ts")
    assert frame["close"].tolist() == [0.0, 1.0, 2.0, 3.0]

    where = f"FROM {bars} WHERE symbol = 'NVDA' ORDER BY ts"
    tsv = client.raw_query(f"SELECT symbol, trade_count {where} FORMAT TabSeparated")
    assert tsv == b"NVDA\t0\nNVDA\t1\n"
    csv = client.raw_query(f"SELECT symbol, trade_count {where} FORMAT CSV")
    assert csv == b'"NVDA",0\n"NVDA",1\n'
    each = client.raw_query(f"SELECT symbol, trade_count {where} FORMAT JSONEachRow")
    assert [json.loads(x) for x in each.splitlines()] == [
        {"symbol": "NVDA", "trade_count": 0},
        {"symbol": "NVDA", "trade_count": 1},
    ]
    doc = json.loads(client.raw_query(f"SELECT symbol, trade_count {where} FORMAT JSON"))
    assert doc["rows"] == 2 and doc["data"][1] == {"symbol": "NVDA", "trade_count": 1}
    rowbinary = client.raw_query(f"SELECT trade_count {where} FORMAT RowBinary")
    assert rowbinary == (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    arrow = pa.ipc.open_file(client.raw_query(f"SELECT trade_count {where} FORMAT Arrow"))
    assert arrow.read_all().column(0).to_pylist() == [0, 1]


def test_bound_parameters_are_data(client, bars):
    hostile = "'; DROP TABLE bars; --"
    rows = bar_rows(2)
    rows[0][1], rows[1][1] = "O'Reilly", hostile
    client.insert(bars, rows, column_names=BAR_COLUMNS)
    for symbol in ("O'Reilly", hostile):
        result = client.query(
            f"SELECT symbol, count() FROM {bars} WHERE symbol = {{sym:String}} GROUP BY symbol",
            parameters={"sym": symbol},
        )
        assert result.result_rows == [(symbol, 1)]
    assert client.command(f"SELECT count() FROM {bars}") == 2


def test_settings_parameters(client):
    result = client.query("SELECT getSetting('max_threads')", settings={"max_threads": 3})
    assert result.result_rows == [(3,)]
    assert client.query("SELECT getSetting('max_threads')").result_rows != [(3,)]
    with pytest.raises(DatabaseError) as err:
        client.query("SELECT 1", settings={"no_such_setting_anywhere": 1})
    assert err.value.code == 115


def test_engine_errors_keep_their_codes(client):
    with pytest.raises(DatabaseError) as err:
        client.query("SELECT * FROM no_such_table_here")
    assert err.value.code == 60 and "UNKNOWN_TABLE" in str(err.value)
    with pytest.raises(DatabaseError) as err:
        client.command("SELEC 1")
    assert err.value.code == 62 and "Syntax error" in str(err.value)


def test_streams_a_large_result(client):
    rows = 3_000_000
    total = 0
    seen = 0
    with client.query_arrow_stream(f"SELECT number FROM numbers({rows})") as stream:
        for batch in stream:
            seen += batch.num_rows
            total += pc.sum(batch.column(0)).as_py()
    assert (seen, total) == (rows, rows * (rows - 1) // 2)
    blocks = 0
    count = 0
    with client.query_row_block_stream(
        f"SELECT number, toString(number) FROM numbers({rows})"
    ) as s:
        for block in s:
            blocks += 1
            count += len(block)
            last = block[-1]
    assert count == rows and blocks > 1 and last == (rows - 1, str(rows - 1))


def test_insert_deduplication_token(client, bars):
    rows = bar_rows(5)
    for _ in range(2):
        client.insert(
            bars, rows, column_names=BAR_COLUMNS, settings={"insert_deduplication_token": "b-1"}
        )
    assert client.command(f"SELECT count() FROM {bars}") == 5
    client.insert(
        bars, rows, column_names=BAR_COLUMNS, settings={"insert_deduplication_token": "b-2"}
    )
    assert client.command(f"SELECT count() FROM {bars}") == 10


# ---- HTTP endpoint only -------------------------------------------------------------------


@pytest.mark.parametrize("compress", ["lz4", "zstd", True, False])
def test_client_compression_modes(server, compress):
    client = server.client(compress=compress)
    db = f"c_{secrets.token_hex(4)}"
    try:
        client.command(f"CREATE DATABASE {db}")
        client.command(BARS_DDL.format(table=f"{db}.bars"))
        # Big enough for the client to send several compressed blocks in one request
        n = 300_000
        client.insert_arrow(f"{db}.bars", bars_arrow(n))
        client.insert(f"{db}.bars", bar_rows(50_000), column_names=BAR_COLUMNS)
        assert client.command(f"SELECT count() FROM {db}.bars") == n + 50_000
        frame = client.query_df(f"SELECT trade_count FROM {db}.bars WHERE symbol = 'MSFT'")
        assert int(frame["trade_count"].sum()) == n * (n - 1) // 2
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")
        client.close()


def test_native_insert_with_many_compressed_frames(server):
    """A clickhouse-connect Native insert large enough to go out as several lz4 frames."""
    client = server.client(compress="lz4")
    db = f"f_{secrets.token_hex(4)}"
    try:
        client.command(f"CREATE DATABASE {db}")
        client.command(f"CREATE TABLE {db}.t (k UInt64, s String) ENGINE = MergeTree ORDER BY k")
        n = 400_000
        column_data = [list(range(n)), [f"value-{i:08d}" * 4 for i in range(n)]]
        client.insert(f"{db}.t", column_data, column_names=["k", "s"], column_oriented=True)
        assert client.query(f"SELECT count(), sum(k) FROM {db}.t").result_rows == [
            (n, n * (n - 1) // 2)
        ]
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")
        client.close()


@pytest.fixture
def raw_table(server):
    client = server.client()
    name = f"default.raw_{secrets.token_hex(4)}"
    client.command(f"CREATE TABLE {name} (k UInt32, s String) ENGINE = MergeTree ORDER BY k")
    yield name, client
    client.command(f"DROP TABLE IF EXISTS {name}")
    client.close()


def tsv_rows(start: int, stop: int) -> bytes:
    return b"".join(f"{i}\tv{i}\n".encode() for i in range(start, stop))


def test_raw_chunked_body(server, raw_table):
    table, client = raw_table
    parts = [f"INSERT INTO {table} FORMAT TSV\n".encode() + tsv_rows(0, 500)]
    parts += [tsv_rows(500, 1000)[:7], tsv_rows(500, 1000)[7:], tsv_rows(1000, 1500)]
    status, headers, body = server.request(
        "POST", body=iter(parts), headers=server.basic_auth(), encode_chunked=True
    )
    assert status == 200, body
    assert json.loads(headers["x-clickhouse-summary"])["written_rows"] == "1500"
    assert client.command(f"SELECT count(), sum(k) FROM {table}") == ["1500", str(1499 * 750)]


@pytest.mark.parametrize("encoding", ["lz4", "zstd", "gzip"])
def test_raw_multi_frame_compressed_body(server, raw_table, encoding):
    table, client = raw_table
    compress = {
        "lz4": lz4.frame.compress,
        "zstd": zstandard.ZstdCompressor().compress,
        "gzip": gzip.compress,
    }[encoding]
    frames = b"".join(compress(tsv_rows(i, i + 1000)) for i in range(0, 3000, 1000))
    headers = {**server.basic_auth(), "Content-Encoding": encoding}
    params = {"query": f"INSERT INTO {table} FORMAT TSV"}
    status, _, body = server.request("POST", params=params, body=frames, headers=headers)
    assert status == 200, body
    assert client.command(f"SELECT count(), uniqExact(s) FROM {table}") == ["3000", "3000"]


@pytest.mark.parametrize("encoding", ["lz4", "zstd", "gzip", "deflate"])
def test_compressed_responses(server, encoding):
    params = {"query": "SELECT number FROM numbers(100000)", "enable_http_compression": "1"}
    headers = {**server.basic_auth(), "Accept-Encoding": encoding}
    status, got, body = server.request("GET", params=params, headers=headers)
    assert status == 200 and got["content-encoding"] == encoding
    decoded = {
        "lz4": lz4.frame.decompress,
        "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
        "gzip": gzip.decompress,
        "deflate": zlib.decompress,
    }[encoding](body)
    assert decoded == b"".join(f"{i}\n".encode() for i in range(100000))
    # Without enable_http_compression ClickHouse answers uncompressed whatever is accepted
    status, got, body = server.request("GET", params={"query": "SELECT 1"}, headers=headers)
    assert status == 200 and "content-encoding" not in got and body == b"1\n"


def test_response_headers(server):
    params = {"query": "SELECT 1 AS x FORMAT JSONEachRow", "query_id": "q-123"}
    status, headers, body = server.request("POST", params=params, headers=server.basic_auth())
    assert (status, body) == (200, b'{"x":1}\n')
    assert headers["x-clickhouse-query-id"] == "q-123"
    assert headers["x-clickhouse-format"] == "JSONEachRow"
    assert headers["x-clickhouse-timezone"] in ("UTC", "Etc/UTC")
    assert headers["x-clickhouse-server-display-name"]
    assert headers["content-type"].startswith("application/x-ndjson")
    assert "read_rows" in json.loads(headers["x-clickhouse-summary"])
    status, _, body = server.request("GET", "/ping")
    assert (status, body) == (200, b"Ok.\n")
    status, _, body = server.request("GET", "/")
    assert (status, body) == (200, b"Ok.\n")


def test_default_format_and_query_in_body(server):
    headers = server.basic_auth()
    params = {"default_format": "CSV"}
    status, headers_out, body = server.request(
        "POST", params=params, body=b"SELECT 'a', 2", headers=headers
    )
    assert (status, body, headers_out["x-clickhouse-format"]) == (200, b'"a",2\n', "CSV")
    # ClickHouse joins the query parameter and the body with a newline
    status, _, body = server.request(
        "POST", params={"query": "SELECT"}, body=b"40 + 2", headers=headers
    )
    assert (status, body) == (200, b"42\n")


def test_get_is_read_only(server, raw_table):
    table, _ = raw_table
    params = {"query": f"INSERT INTO {table} VALUES (1, 'x')"}
    status, headers, body = server.request("GET", params=params, headers=server.basic_auth())
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "164"), body


def test_authentication_methods(server):
    query = {"query": "SELECT currentUser() != ''"}
    assert server.request("POST", params=query, headers=server.basic_auth())[0] == 200
    keyed = {"X-ClickHouse-User": server.user, "X-ClickHouse-Key": server.password}
    assert server.request("POST", params=query, headers=keyed)[2] == b"1\n"
    in_url = {**query, "user": server.user, "password": server.password}
    assert server.request("POST", params=in_url)[0] == 200

    for headers in (
        server.basic_auth(password="wrong"),
        {"X-ClickHouse-User": server.user, "X-ClickHouse-Key": "wrong"},
        {},  # user default with an empty password is not this server's user
    ):
        status, got, body = server.request("POST", params=query, headers=headers)
        assert status == 403
        assert got["x-clickhouse-exception-code"] == "516"
        assert body.startswith(b"Code: 516. DB::Exception: ")
        assert b"Authentication failed: password is incorrect, or there is no user" in body
        assert b"(AUTHENTICATION_FAILED)" in body

    with pytest.raises(DatabaseError) as err:
        server.client(password="wrong")
    assert err.value.code == 516 and "516" in str(err.value)


def test_http_error_statuses(server):
    auth = server.basic_auth()
    cases = [("SELECT * FROM no_such_table", 404, 60), ("SELEC 1", 400, 62)]
    cases += [("SELECT * FROM no_such_db.t", 404, 81), ("SELECT throwIf(1)", 500, 395)]
    # chdb would run every statement; ClickHouse refuses multi-statements over HTTP
    cases += [("SELECT 1; SET max_threads = 1", 400, 62)]
    for query, status, code in cases:
        got_status, headers, body = server.request("POST", body=query.encode(), headers=auth)
        assert (got_status, headers["x-clickhouse-exception-code"]) == (status, str(code)), body
        assert body.startswith(f"Code: {code}. DB::Exception: ".encode())
        assert b"(version " in body


def test_malformed_bodies_get_errors_not_crashes(server, raw_table):
    table, client = raw_table
    auth = server.basic_auth()
    insert = {"query": f"INSERT INTO {table} FORMAT Native"}
    for encoding, payload in [
        ("lz4", b"\x04\x22\x4d\x18garbage-garbage-garbage"),
        ("zstd", b"\x28\xb5\x2f\xfdnot really zstd"),
        ("gzip", b"\x1f\x8bnope"),
        ("lz4", lz4.frame.compress(b"x" * 1000)[:-9]),  # truncated frame
        ("snappy-ish", b"abc"),
    ]:
        headers = {**auth, "Content-Encoding": encoding}
        status, got, body = server.request("POST", params=insert, body=payload, headers=headers)
        assert status >= 400 and got["x-clickhouse-exception-code"].isdigit(), body
        assert body.startswith(b"Code: ")
    status, got, body = server.request(
        "POST", params=insert, body=b"\x02\x07garbage native block", headers=auth
    )
    assert status >= 400 and body.startswith(b"Code: "), body
    assert server.request("GET", "/ping")[2] == b"Ok.\n"
    assert client.command(f"SELECT count() FROM {table}") == 0


def test_sessions_keep_use_and_set(server):
    db = f"s_{secrets.token_hex(4)}"
    session = server.client(session_id=f"sess-{secrets.token_hex(4)}")
    plain = server.client()
    try:
        session.command(f"CREATE DATABASE {db}")
        session.command(f"USE {db}")
        session.command("SET max_threads = 3, max_block_size = 4321")
        assert session.command("SELECT currentDatabase()") == db
        assert session.command(
            "SELECT getSetting('max_threads'), getSetting('max_block_size')"
        ) == ["3", "4321"]
        session.command("SET max_block_size = 1234")
        assert session.command("SELECT getSetting('max_block_size')") == 1234
        # Per-request settings apply to that request only
        one_off = session.query("SELECT getSetting('max_threads')", settings={"max_threads": 2})
        assert one_off.result_rows == [(2,)]
        assert session.command("SELECT getSetting('max_threads')") == 3
        # Other clients never see a session's state
        assert plain.command("SELECT currentDatabase()") == "default"
        assert plain.command("SELECT getSetting('max_block_size')") != 1234
        with pytest.raises(DatabaseError) as err:
            session.command("USE no_such_database_here")
        assert err.value.code == 81
        assert session.command("SELECT currentDatabase()") == db
    finally:
        plain.command(f"DROP DATABASE IF EXISTS {db}")
        session.close()
        plain.close()


def test_session_expires_after_its_timeout(server):
    auth = server.basic_auth()
    sid = f"short-{secrets.token_hex(4)}"
    params = {"session_id": sid, "session_timeout": "1"}
    assert (
        server.request("POST", params=params, body=b"SET max_threads = 2", headers=auth)[0] == 200
    )
    check = {**params, "session_check": "1"}
    status, _, body = server.request("POST", params=check, body=b"SELECT 1", headers=auth)
    assert (status, body) == (200, b"1\n")
    time.sleep(1.5)
    status, headers, body = server.request("POST", params=check, body=b"SELECT 1", headers=auth)
    assert headers["x-clickhouse-exception-code"] == "372", body


def _writer(port: int, user: str, password: str, table: str, writer: int, batches: int, rows: int):
    import clickhouse_connect

    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=port, username=user, password=password
    )
    for batch in range(batches):
        start = (writer * batches + batch) * rows
        data = [list(range(start, start + rows)), [f"w{writer}"] * rows]
        client.insert(table, data, column_names=["k", "s"], column_oriented=True)
    client.close()


def test_concurrent_writer_processes(server, raw_table):
    table, client = raw_table
    writers, batches, rows = 4, 50, 2000
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_writer,
            args=(server.port, server.user, server.password, table, w, batches, rows),
        )
        for w in range(writers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    total = writers * batches * rows
    assert client.command(f"SELECT count(), uniqExact(k), sum(k) FROM {table}") == [
        str(total),
        str(total),
        str(total * (total - 1) // 2),
    ]


def test_sigterm_keeps_acknowledged_inserts_and_one_server_per_directory(tmp_path):
    srv = WarehouseServer(tmp_path / "wh", "ops", secrets.token_hex(8), password_via_env=True)
    srv.start()
    try:
        client = srv.client()
        client.command(BARS_DDL.format(table="default.bars"))
        client.insert_arrow("bars", bars_arrow(10_000))
        client.insert("bars", bar_rows(500), column_names=BAR_COLUMNS)
        client.close()

        rival = WarehouseServer(srv.path, "ops", "x")
        with pytest.raises(RuntimeError) as err:
            rival.start()
        message = str(err.value)
        assert "exited 1" in message
        assert f"another quant warehouse server already serves {srv.path.resolve()}" in message
        assert f"(pid {srv.proc.pid})" in message
        assert srv.password not in srv.proc.args
    finally:
        assert srv.stop() == 0

    srv.port = WarehouseServer(srv.path, "", "").port
    srv.start()
    try:
        client = srv.client()
        assert client.command("SELECT count() FROM bars") == 10_500
        client.close()
    finally:
        assert srv.stop() == 0
