"""``quant warehouse serve`` is closed by default: authentication always on, no statement reaches
the host, CORS only for configured origins, the Host header names the server, GET reads only.

Every probe runs against a real server subprocess over HTTP (raw requests or the unmodified
clickhouse-connect client), whose environment carries a canary value that must never come back.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from quant_dev.processes import warehouse_endpoint
from quant_dev.warehouse_server.policy import ALLOWED_SOURCES, MAX_EXECUTION_TIME
from quant_resources.settings import ENDPOINT_FILE, PASSWORD_FILE
from tests.warehouse_fixtures import QUANT, WarehouseServer

pytestmark = pytest.mark.xdist_group("warehouse_server")

CANARY = f"quant-canary-{secrets.token_hex(8)}"
# Infinite or huge system tables, read with a LIMIT anyway
_LIMIT = 2000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = WarehouseServer(
        tmp_path_factory.mktemp("guarded"),
        "quant",
        secrets.token_hex(12),
        env_extra={"QUANT_GUARD_CANARY": CANARY},
    )
    srv.start()
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A directory outside the server's: nothing may appear in it."""
    return tmp_path_factory.mktemp("outside")


def post(server: WarehouseServer, sql: str, params: dict | None = None, method: str = "POST"):
    params = dict(params or {})
    body = sql.encode()
    if method == "GET":
        params["query"], body = sql, None
    return server.request(method, "/", params=params, body=body, headers=server.basic_auth())


def assert_refused(response, code: int, *words: str) -> None:
    status, headers, body = response
    text = body.decode(errors="replace")
    assert status == {497: 403, 164: 500, 516: 403, 115: 404}[code], text
    assert headers.get("x-clickhouse-exception-code") == str(code), text
    assert f"Code: {code}." in text
    for word in words:
        assert word in text, text
    assert CANARY not in text


def assert_alive(server: WarehouseServer) -> None:
    # The client gives up after a second: a refused probe must leave the server answering
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1)
    try:
        conn.request("GET", "/ping")
        assert conn.getresponse().read() == b"Ok.\n"
    finally:
        conn.close()


# ---- no statement reaches the host ---------------------------------------------------------

HOST_PROBES = [
    ("SELECT * FROM file('/proc/self/environ', 'RawBLOB')", "'file'"),
    ("SELECT file('/proc/self/environ')", "'file'"),
    ("SELECT * FROM FILE('/etc/passwd', 'LineAsString')", "'FILE'"),
    ("SELECT * FROM `file`('/etc/passwd', 'LineAsString')", "'file'"),
    ("SELECT * FROM url('file:///proc/self/environ', 'RawBLOB')", "'url'"),
    ("SELECT * FROM url('http://127.0.0.1:9/x', 'RawBLOB')", "'url'"),
    ("SELECT * FROM s3('http://127.0.0.1:9/b/k.csv', 'CSV')", "'s3'"),
    ("SELECT * FROM remote('127.0.0.1:9', system.one)", "'remote'"),
    ("SELECT * FROM remoteSecure('127.0.0.1:9', system.one)", "'remoteSecure'"),
    ("SELECT * FROM mysql('127.0.0.1:9', 'd', 't', 'u', 'p')", "'mysql'"),
    ("SELECT * FROM postgresql('127.0.0.1:9', 'd', 't', 'u', 'p')", "'postgresql'"),
    ("SELECT * FROM executable('cat', 'RawBLOB', 'x String')", "'executable'"),
    ("SELECT * FROM sqlite('/etc/x.db', 't')", "'sqlite'"),
    ("SELECT * FROM `/proc/self/environ`", "path"),
    ("SELECT * FROM default.`/etc/passwd`", "path"),
    ("SELECT * FROM (SELECT * FROM file('/etc/passwd', 'LineAsString'))", "'file'"),
    ("SELECT 1 WHERE 1 IN (SELECT count() FROM url('http://127.0.0.1:9/'))", "'url'"),
    ("CREATE VIEW guard_v AS SELECT * FROM file('/etc/passwd', 'LineAsString')", "'file'"),
    ("CREATE TABLE guard_f (a String) ENGINE = File(RawBLOB, '/proc/self/environ')", "'File'"),
    ("CREATE TABLE guard_u (a String) ENGINE = URL('http://127.0.0.1:9/', RawBLOB)", "'URL'"),
    ("CREATE TABLE guard_k (a String) ENGINE = Kafka", "'Kafka'"),
    ("CREATE TABLE guard_l (a String) ENGINE = FileLog('/var/log', 'RawBLOB')", "'FileLog'"),
    ("CREATE DATABASE guard_fs ENGINE = Filesystem('/')", "'Filesystem'"),
    (
        "CREATE DICTIONARY guard_dict (a String) PRIMARY KEY a "
        "SOURCE(FILE(path '/proc/self/environ' format 'RawBLOB')) LAYOUT(FLAT()) LIFETIME(0)",
        "Dictionary source 'file'",
    ),
    (
        "CREATE DICTIONARY guard_dict (a UInt64) PRIMARY KEY a "
        "SOURCE(CLICKHOUSE(HOST '127.0.0.1' PORT 9 TABLE 't')) LAYOUT(FLAT()) LIFETIME(0)",
        "'HOST'",
    ),
    (
        "CREATE DICTIONARY guard_dict (a String) PRIMARY KEY a SOURCE(CLICKHOUSE(QUERY "
        "'SELECT * FROM file(''/proc/self/environ'', ''RawBLOB'')')) LAYOUT(FLAT()) LIFETIME(0)",
        "'QUERY'",
    ),
    (
        "CREATE DICTIONARY guard_dict (a String) PRIMARY KEY a "
        "SOURCE(CLICKHOUSE(TABLE '/proc/self/environ')) LAYOUT(FLAT()) LIFETIME(0)",
        "TABLE",
    ),
    ("SYSTEM FLUSH LOGS", "SYSTEM"),
    ("SYSTEM RELOAD CONFIG", "SYSTEM"),
    ("BACKUP DATABASE system TO Disk('default', 'guard.zip')", "BackupQuery"),
    ("RESTORE DATABASE system FROM Disk('default', 'guard.zip')", "RestoreQuery"),
    ("CREATE USER guard_user IDENTIFIED BY 'x'", "CreateUserQuery"),
    ("GRANT ALL ON *.* TO default", "GrantQuery"),
    ("SELECT 1 SETTINGS allow_introspection_functions = 1", "allow_introspection_functions"),
    ("SELECT demangle(addressToSymbol(1))", "(table function, engine or function)"),
    ("SELECT 1 SETTINGS max_memory_usage = 0", "max_memory_usage"),
    ("SELECT 1 SETTINGS readonly = 0", "readonly"),
    (f"SELECT 1 SETTINGS max_execution_time = {MAX_EXECUTION_TIME * 10:g}", "max_execution_time"),
    ("SELECT 1 SETTINGS max_execution_time = 0", "max_execution_time"),
    ("SELECT 1 /* SETTINGS max_threads = 1 */ SETTINGS max_memory_usage = 0", "max_memory_usage"),
    ("SELECT 1 FORMAT Template SETTINGS format_template_row = '/etc/passwd'", "format_template"),
    ("SELECT 1 FORMAT Protobuf SETTINGS format_schema = '/etc/x:M'", "format_schema"),
    ("SET allow_introspection_functions = 1", "allow_introspection_functions"),
    ("SET max_memory_usage = 0", "max_memory_usage"),
]


@pytest.mark.parametrize(("sql", "named"), HOST_PROBES, ids=[p[0][:60] for p in HOST_PROBES])
def test_host_probes_are_refused_before_execution(server, sql, named):
    assert_refused(post(server, sql), 497, named, "ACCESS_DENIED")
    assert_alive(server)


def test_writes_to_the_host_are_refused_and_write_nothing(server, outside):
    target = outside / "written.csv"
    disk_dir = outside / "disk"
    probes = [
        (f"INSERT INTO FUNCTION file('{target}', 'CSV') SELECT 1", "'file'"),
        (f"INSERT INTO FUNCTION file('{target}', 'CSV') FORMAT CSV\n1\n", "'file'"),
        (f"SELECT 1 INTO OUTFILE '{target}'", "OUTFILE"),
        (f"SELECT 1 INTO OUTFILE '{target}' FORMAT CSV", "OUTFILE"),
        (f"EXPLAIN SELECT 1 INTO OUTFILE '{target}'", "OUTFILE"),
        (
            "CREATE TABLE guard_disk (a Int) ENGINE = MergeTree ORDER BY a "
            f"SETTINGS disk = disk(type = local, path = '{disk_dir}/')",
            "disk",
        ),
        (f"ATTACH TABLE guard_at FROM '{disk_dir}' (a Int) ENGINE = MergeTree ORDER BY a", "FROM"),
        (f"CREATE TABLE guard_fw (a Int) ENGINE = File(CSV, '{target}')", "'File'"),
    ]
    for sql, named in probes:
        assert_refused(post(server, sql), 497, named)
        assert_alive(server)
    assert not target.exists()
    assert not disk_dir.exists()
    assert list(outside.iterdir()) == []
    # Nothing half-created either
    assert "guard_" not in post(server, "SHOW TABLES")[2].decode()


def test_several_statements_are_refused_before_the_engine_sees_them(server, outside):
    target = outside / "second.csv"
    for sql in (
        f"SELECT 1; INSERT INTO FUNCTION file('{target}', 'CSV') SELECT 1",
        f"SELECT 1 /* nested /* comment */ still */; SELECT 1 INTO OUTFILE '{target}'",
    ):
        status, headers, body = post(server, sql)
        assert (status, headers.get("x-clickhouse-exception-code")) == (400, "62"), body
        assert b"Multi-statements are not allowed" in body
    assert not target.exists()
    # A nested comment or a heredoc holding ';' is still one statement
    assert post(server, "SELECT 1 /* a /* b */ ; c */")[2] == b"1\n"


def test_insert_from_infile_is_refused(server):
    assert post(server, "CREATE TABLE guard_in (line String) ENGINE = Memory")[0] == 200
    sql = "INSERT INTO guard_in FROM INFILE '/proc/self/environ' FORMAT LineAsString"
    assert_refused(post(server, sql), 497, "INFILE")
    # The rows of VALUES are evaluated by the engine but are not part of its parse tree
    for sql in (
        "INSERT INTO guard_in VALUES ('a'), (file('/proc/self/environ'))",
        "INSERT INTO guard_in VALUES ((SELECT * FROM url('file:///proc/self/environ', 'RawBLOB')))",
        "INSERT INTO guard_in VALUES ((SELECT any(*) FROM `/proc/self/environ`))",
    ):
        assert_refused(post(server, sql), 497)
    assert post(server, "SELECT count() FROM guard_in")[2] == b"0\n"
    assert post(server, "DROP TABLE guard_in")[0] == 200


def test_every_table_function_the_engine_knows_is_allowed_or_refused(server):
    names = post(server, "SELECT name FROM system.table_functions")[2].decode().split()
    assert "file" in names and "url" in names
    refused = [n for n in names if n.lower() not in ALLOWED_SOURCES]
    for name in refused:
        assert_refused(post(server, f"SELECT * FROM {name}('x')"), 497, f"'{name}'")
    assert_alive(server)


def test_query_parameters_are_judged_after_substitution(server):
    sql = "SELECT * FROM {t:Identifier}"
    assert_refused(post(server, sql, {"param_t": "/proc/self/environ"}), 497, "path")
    assert post(server, "SELECT {n:UInt8}", {"param_n": "7"})[2] == b"7\n"


def test_settings_in_the_url_are_allow_listed(server):
    assert_refused(post(server, "SELECT 1", {"max_memory_usage": "0"}), 497, "max_memory_usage")
    assert_refused(post(server, "SELECT 1", {"readonly": "0"}), 497, "readonly")
    assert_refused(post(server, "SELECT 1", {"user_files_path": "/"}), 115, "user_files_path")
    assert post(server, "SELECT getSetting('max_threads')", {"max_threads": "2"})[2] == b"2\n"


def test_session_cannot_raise_the_caps_through_set(server):
    client = server.client(autogenerate_session_id=True)
    try:
        client.command("SET max_threads = 2, max_execution_time = 10")
        with pytest.raises(DatabaseError) as err:
            client.command("SET max_threads = 3, max_execution_time = 0")
        assert err.value.code == 497 and "max_execution_time" in str(err.value)
        # The refused SET left the session as it was
        query = "SELECT getSetting('max_threads'), getSetting('max_execution_time')"
        assert client.query(query).result_rows == [(2, 10)]
    finally:
        client.close()


def test_the_environment_never_leaves_the_server(server):
    """No system table, error or setting carries the server's environment."""
    tables = post(server, "SELECT name FROM system.tables WHERE database = 'system'")[2]
    names = tables.decode().split()
    assert "settings" in names
    for name in names:
        body = post(server, f"SELECT * FROM system.`{name}` LIMIT {_LIMIT}")[2]
        assert CANARY.encode() not in body, name
    assert_alive(server)


def test_the_projects_own_statements_pass(server):
    """What quant_resources.warehouse and the migrations send, through the guard."""
    client = server.client()
    try:
        client.command("CREATE DATABASE IF NOT EXISTS guard_db")
        client.command(
            "CREATE TABLE guard_db.t (k String, v UInt64) ENGINE = ReplacingMergeTree "
            "ORDER BY k SETTINGS non_replicated_deduplication_window = 1000"
        )
        client.command("CREATE TABLE guard_db.stage (k String, v UInt64) ENGINE = Memory")
        client.insert("guard_db.stage", [["a", 1], ["b", 2]], column_names=["k", "v"])
        client.command(
            "INSERT INTO guard_db.t SELECT * FROM guard_db.stage",
            settings={"optimize_on_insert": 0, "insert_deduplication_token": "x"},
        )
        client.command(
            "ALTER TABLE guard_db.t DELETE WHERE k = 'a'", settings={"mutations_sync": 2}
        )
        parts = client.query(
            "SELECT name FROM system.parts WHERE database = 'guard_db' AND table = 't' AND active"
        ).result_rows
        client.command(f"ALTER TABLE guard_db.t DROP PART '{parts[0][0]}'")
        columns = client.query(
            "SELECT name FROM system.columns WHERE database = 'guard_db' AND table = 't'"
        )
        assert [r[0] for r in columns.result_rows] == ["k", "v"]
        assert client.query("SELECT count() FROM guard_db.t FINAL").result_rows == [(0,)]
    finally:
        client.command("DROP DATABASE IF EXISTS guard_db")
        client.close()


# ---- GET reads only ------------------------------------------------------------------------


def test_get_is_read_only(server):
    assert post(server, "SELECT 1", method="GET")[2] == b"1\n"
    assert post(server, "SHOW DATABASES", method="GET")[0] == 200
    assert post(server, "CREATE TABLE guard_get (a Int) ENGINE = Memory")[0] == 200
    try:
        for sql in (
            "INSERT INTO guard_get VALUES (1)",
            "INSERT INTO guard_get SELECT 1",
            "INSERT INTO guard_get FORMAT CSV\n1\n",
            "ALTER TABLE guard_get DELETE WHERE 1",
            "DROP TABLE guard_get",
            "SET max_threads = 1",
        ):
            assert_refused(post(server, sql, method="GET"), 164, "READONLY")
        assert_refused(post(server, "SELECT 1 INTO OUTFILE 'x'", method="GET"), 497, "OUTFILE")
        assert post(server, "SELECT count() FROM guard_get")[2] == b"0\n"
        assert post(server, "EXISTS TABLE guard_get", method="GET")[2] == b"1\n"
    finally:
        post(server, "DROP TABLE guard_get")


# ---- authentication ------------------------------------------------------------------------


def test_anonymous_and_wrong_passwords_are_refused(server):
    status, headers, body = server.request("POST", "/", body=b"SELECT 1")
    assert_refused((status, headers, body), 516, "Authentication failed")
    wrong = server.basic_auth(password="not-it")
    assert_refused(server.request("POST", "/", body=b"SELECT 1", headers=wrong), 516)
    anonymous = server.request("GET", "/", params={"query": "SELECT 1", "user": "default"})
    assert_refused(anonymous, 516)


def test_generated_password_is_private_reused_and_found_by_local_clients(tmp_path, monkeypatch):
    home = tmp_path / "home"
    srv = WarehouseServer(home / "warehouse", "quant", None)
    srv.start()
    try:
        password_file = srv.path / PASSWORD_FILE
        endpoint_file = srv.path / ENDPOINT_FILE
        for path in (password_file, endpoint_file):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert srv.password and srv.password in password_file.read_text()
        assert_refused(srv.request("POST", "/", body=b"SELECT 1"), 516)

        # A local client with no CLICKHOUSE_URL finds the endpoint through QUANT_HOME
        from quant_resources.settings import clickhouse_url

        monkeypatch.setenv("QUANT_HOME", str(home))
        monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
        url = clickhouse_url()
        assert url == f"http://quant:{srv.password}@127.0.0.1:{srv.port}/quant"
        parts = urlsplit(url)
        client = clickhouse_connect.get_client(
            host=parts.hostname, port=parts.port, username="quant", password=parts.password
        )
        assert client.command("SELECT 1") == 1
        client.close()
    finally:
        assert srv.stop() == 0
    # Gone with the server: local clients fall back to chDB on the same directory
    assert not endpoint_file.exists()
    assert clickhouse_url() == f"chdb://{home / 'warehouse'}?database=quant"

    first = srv.password
    again = WarehouseServer(home / "warehouse", "quant", None)
    again.start()
    try:
        assert again.password == first
        assert again.client().command("SELECT 1") == 1
    finally:
        assert again.stop() == 0


def test_an_empty_password_is_refused_at_start(tmp_path):
    cmd = [str(QUANT), "warehouse", "serve", "--path", str(tmp_path / "w"), "--password", ""]
    env = {k: v for k, v in os.environ.items() if k != "QUANT_WAREHOUSE_PASSWORD"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "refusing to serve without a password" in done.stderr


# ---- Host and CORS -------------------------------------------------------------------------


def test_a_forged_host_is_refused(server):
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1:1"):
        headers = {**server.basic_auth(), "Host": host}
        status, got, body = server.request("POST", "/", body=b"SELECT 1", headers=headers)
        assert status == 403 and got.get("x-clickhouse-exception-code") == "497"
        assert f"Host header '{host}' does not name this server" in body.decode()
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
        headers = {**server.basic_auth(), "Host": host}
        assert server.request("POST", "/", body=b"SELECT 1", headers=headers)[2] == b"1\n"


def test_no_cors_header_without_configured_origins(server):
    headers = {**server.basic_auth(), "Origin": "http://evil.example"}
    params = {"add_http_cors_header": "1"}
    status, got, _ = server.request("POST", "/", params, body=b"SELECT 1", headers=headers)
    assert status == 200
    assert not any(k.startswith("access-control-") for k in got)
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    status, got, _ = server.request("OPTIONS", "/", headers=preflight)
    assert status == 403
    assert not any(k.startswith("access-control-") for k in got)


def test_cors_answers_configured_origins_exactly(tmp_path):
    origin = "http://dashboard.example:8080"
    srv = WarehouseServer(
        tmp_path / "cors",
        "quant",
        secrets.token_hex(8),
        args=("--allowed-host", "warehouse.internal"),
        env_extra={"QUANT_WAREHOUSE_CORS_ORIGINS": origin},
    )
    srv.start()
    try:
        headers = {**srv.basic_auth(), "Origin": origin}
        status, got, body = srv.request("POST", "/", body=b"SELECT 1", headers=headers)
        assert (status, body) == (200, b"1\n")
        assert got["access-control-allow-origin"] == origin
        preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        status, got, _ = srv.request("OPTIONS", "/", headers=preflight)
        assert status == 204 and got["access-control-allow-origin"] == origin
        assert "POST" in got["access-control-allow-methods"]
        other = {**srv.basic_auth(), "Origin": "http://evil.example"}
        got = srv.request("POST", "/", body=b"SELECT 1", headers=other)[1]
        assert "access-control-allow-origin" not in got
        # --allowed-host adds a name, with this server's port
        named = {**srv.basic_auth(), "Host": f"warehouse.internal:{srv.port}"}
        assert srv.request("POST", "/", body=b"SELECT 1", headers=named)[2] == b"1\n"
    finally:
        assert srv.stop() == 0


def test_the_server_runs_from_an_empty_directory(server):
    """chDB's default database reads unknown table names as files relative to the working
    directory: the server's is empty, so the project's own files are out of reach."""
    # The server was started from this test's working directory, the repository's root
    assert Path("pyproject.toml").is_file()
    status, _, body = post(server, "SELECT count() FROM `pyproject.toml`")
    assert status == 404 and b"UNKNOWN_TABLE" in body


def test_dictionaries_over_this_servers_tables_are_allowed(server):
    client = server.client()
    try:
        client.command("CREATE TABLE guard_src (k UInt64, v String) ENGINE = MergeTree ORDER BY k")
        client.command("INSERT INTO guard_src VALUES (1, 'one')")
        client.command(
            "CREATE DICTIONARY guard_names (k UInt64, v String) PRIMARY KEY k "
            "SOURCE(CLICKHOUSE(TABLE 'guard_src')) LAYOUT(FLAT()) LIFETIME(0)"
        )
        value = client.query("SELECT dictGet('guard_names', 'v', toUInt64(1))").result_rows
        assert value == [("one",)]
    finally:
        client.command("DROP DICTIONARY IF EXISTS guard_names")
        client.command("DROP TABLE IF EXISTS guard_src")
        client.close()


def test_the_demo_and_dev_launcher_uses_the_generated_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("QUANT_WAREHOUSE_PASSWORD", raising=False)
    with warehouse_endpoint(tmp_path / "warehouse") as url:
        parts = urlsplit(url)
        stored = (tmp_path / "warehouse" / PASSWORD_FILE).read_text().strip()
        assert (parts.username, parts.password, parts.path) == ("quant", stored, "/quant")
        client = clickhouse_connect.get_client(
            host=parts.hostname, port=parts.port, username="quant", password=stored
        )
        assert client.command("SELECT 1") == 1
        client.close()


def test_a_stale_endpoint_file_is_not_followed(server, tmp_path, monkeypatch):
    """A server killed without cleanup leaves its endpoint file, whose port another server may
    answer on now (here: a live one): clients fall back to chDB."""
    from quant_resources.settings import clickhouse_url

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    (warehouse / ENDPOINT_FILE).write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": server.port,
                "user": "u",
                "password": "p",
                "pid": int(gone.stdout),
            }
        )
    )
    monkeypatch.setenv("QUANT_HOME", str(tmp_path))
    monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
    assert clickhouse_url() == f"chdb://{warehouse}?database=quant"
