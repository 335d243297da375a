"""What one client may cost the others on ``quant warehouse serve``: sizes, timeouts, stalls.

Every probe runs against a real server subprocess over loopback HTTP (raw http.client/sockets
and the unmodified clickhouse-connect client). After each: a clear error, ``/ping`` answers
within a second, nothing was written. Loops are bounded; tests wait for states with deadlines.
"""

from __future__ import annotations

import http.client
import secrets
import select
import socket
import time
import urllib.parse

import pytest
import zstandard
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.warehouse_fixtures import WarehouseServer

pytestmark = pytest.mark.xdist_group("warehouse_server")

MiB = 1 << 20
LIMITS = [
    *("--max-decompressed-bytes", str(64 * MiB), "--max-query-bytes", str(1 * MiB)),
    *("--max-body-bytes", str(256 * MiB), "--max-concurrent-queries", "2"),
    *("--result-memory-bytes", str(4 * MiB), "--result-spool-bytes", str(64 * MiB)),
    *("--header-timeout", "2", "--max-execution-time", "120"),
]
# A query that sleeps half a second per one-row block: long, but costs no CPU
SLEEPY = "SELECT sleepEachRow(0.5), '{tag}' FROM numbers({rows}) SETTINGS max_block_size = 1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = WarehouseServer(
        tmp_path_factory.mktemp("limits"), "quant", secrets.token_hex(12), args=LIMITS
    )
    srv.start()
    yield srv
    assert srv.stop() == 0


@pytest.fixture
def client(server):
    c = server.client(send_receive_timeout=60)
    yield c
    c.close()


@pytest.fixture
def table(client):
    name = f"t_{secrets.token_hex(4)}"
    client.command(f"CREATE TABLE {name} (k UInt64, s String) ENGINE = MergeTree ORDER BY k")
    yield name
    client.command(f"DROP TABLE IF EXISTS {name}")


def assert_healthy(server: WarehouseServer) -> None:
    """``/ping`` answers within a second."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1)
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"Ok.\n")
    finally:
        conn.close()


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def running(client, tag: str) -> int:
    return client.command(
        "SELECT count() FROM system.processes "
        f"WHERE query LIKE '%{tag}%' AND query NOT LIKE '%system.processes%'"
    )


def open_request(server: WarehouseServer, query: str, **params) -> http.client.HTTPConnection:
    """Send a POST query and return the connection without reading the response."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    url = "/?" + urllib.parse.urlencode(params) if params else "/"
    conn.request("POST", url, body=query.encode(), headers=server.basic_auth())
    return conn


def resident_peak_bytes(server: WarehouseServer) -> int:
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def zstd_zeros(size: int) -> bytes:
    """A zstd stream of ``size`` zero bytes, compressed a MiB at a time (the test stays small)."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = bytes(MiB)
    parts = [compressor.compress(zeros) for _ in range(size // MiB)]
    return b"".join(parts) + compressor.flush()


# ---- bodies -------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_as_it_expands(server, client, table):
    bomb = zstd_zeros(1 << 30)  # a GiB of zeros in a few dozen KB
    assert len(bomb) < 256 * 1024
    status, headers, body = server.request(
        "POST",
        params={"query": f"INSERT INTO {table} FORMAT RowBinary"},
        body=bomb,
        headers={**server.basic_auth(), "Content-Encoding": "zstd"},
    )
    assert (status, headers["x-clickhouse-exception-code"]) == (413, "229"), body
    assert b"max_decompressed_bytes" in body
    assert_healthy(server)
    # Cut at the 64 MiB cap: the server never held the expansion (it used to reach 5.7 GB)
    assert resident_peak_bytes(server) < 1536 * MiB
    assert client.command(f"SELECT count() FROM {table}") == 0


def test_oversized_bodies_are_refused(server, client, table):
    auth = server.basic_auth()
    # A query text (not INSERT rows) has a much smaller cap, also after decompression
    status, headers, body = server.request(
        "POST",
        body=zstd_zeros(8 * MiB),
        headers={**auth, "Content-Encoding": "zstd"},
    )
    assert (status, headers["x-clickhouse-exception-code"]) == (413, "229"), body
    assert b"max_query_bytes" in body
    # A declared length past the cap is refused before a byte of the body is read
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("POST", f"/?query=INSERT+INTO+{table}+FORMAT+RowBinary")
        for name, value in {**auth, "Content-Length": str(10 << 30)}.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert b"max_body_bytes" in response.read()
    finally:
        conn.close()
    assert_healthy(server)
    assert client.command(f"SELECT count() FROM {table}") == 0


# ---- connections --------------------------------------------------------------------------


def test_idle_sockets_do_not_stop_other_clients_and_are_closed(server, client):
    sockets = []
    try:
        for i in range(1000):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            if i % 2:  # half send a request line and never finish the headers
                sock.sendall(b"POST /?query=SELECT+1 HTTP/1.1\r\nHost: x\r\n")
            sockets.append(sock)
        assert client.command("SELECT 41 + 1") == 42
        assert_healthy(server)

        # The header deadline (2 s here) closes every one of them
        def closed(sock: socket.socket) -> bool:
            # poll, not select: a test process may well hold file descriptors past 1024
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0)) and sock.recv(1024) == b""

        pending = list(sockets)

        def all_closed() -> bool:
            pending[:] = [sock for sock in pending if not closed(sock)]
            return not pending

        wait_for(all_closed, "the server to close 1,000 idle sockets")
    finally:
        for sock in sockets:
            sock.close()
    assert client.command("SELECT 43") == 43


# ---- fairness -----------------------------------------------------------------------------


def test_stalled_readers_do_not_block_other_clients(server, client):
    tag = f"stalled-{secrets.token_hex(4)}"
    query = f"SELECT number, repeat('x', 50), '{tag}' FROM numbers(3000000) FORMAT TSV"
    # More stalled readers than the server runs queries at once (2)
    stalled = [open_request(server, query) for _ in range(3)]
    try:
        responses = [conn.getresponse() for conn in stalled]
        assert [r.status for r in responses] == [200, 200, 200]
        # Nobody reads them; another client still gets its answers
        other = server.client(send_receive_timeout=30)
        try:
            assert other.command("SELECT 42") == 42
            assert other.query("SELECT count() FROM numbers(1000)").result_rows == [(1000,)]
        finally:
            other.close()
        # chDB is done with them: each result waits in its spill, or failed on the spill cap
        wait_for(lambda: running(client, tag) == 0, "the stalled queries to leave chDB")
        assert_healthy(server)
        # The result outgrew 4 MiB in memory + 64 MiB on disk: its reader learns why
        data = responses[0].read()
        assert b"__exception__" in data[-4096:]
        assert b"TOO_MANY_ROWS_OR_BYTES" in data[-4096:]
    finally:
        for conn in stalled:
            conn.close()


@pytest.mark.parametrize("fmt", ["JSON", "TSV"])  # a one-shot and a streamed query
def test_a_disconnecting_clients_query_is_cancelled(server, client, fmt):
    tag = f"gone-{fmt}-{secrets.token_hex(4)}"
    # 100 s of sleeping, far below the 120 s cap, so only the disconnect can end it early
    conn = open_request(server, SLEEPY.format(tag=tag, rows=200) + f" FORMAT {fmt}")
    wait_for(lambda: running(client, tag) == 1, "the query to start")
    if fmt == "TSV":
        assert conn.getresponse().status == 200  # streaming has begun
    conn.close()
    wait_for(lambda: running(client, tag) == 0, "the query to be cancelled", timeout=30)
    assert_healthy(server)
    assert client.command("SELECT 1") == 1


def test_a_query_on_url_of_the_endpoint_itself_does_not_deadlock(server, client):
    inner = urllib.parse.urlencode(
        {"query": "SELECT 7", "user": server.user, "password": server.password}
    )
    sql = f"SELECT * FROM url('http://127.0.0.1:{server.port}/?{inner}', TSV, 'x UInt8')"
    try:
        assert client.command(sql) == 7
    except DatabaseError as exc:  # a policy may refuse url() outright; it must not hang
        assert "497" in str(exc) or "ACCESS_DENIED" in str(exc), exc
    assert_healthy(server)


def test_execution_time_is_capped(tmp_path):
    srv = WarehouseServer(
        tmp_path / "capped", "quant", secrets.token_hex(12), args=["--max-execution-time", "2"]
    )
    srv.start()
    try:
        client = srv.client(send_receive_timeout=60)
        sleepy = SLEEPY.format(tag="cap", rows=40)  # 20 s
        # Asking for more than the cap gets the cap
        with pytest.raises(DatabaseError) as err:
            client.query(sleepy, settings={"max_execution_time": 100})
        assert "TIMEOUT_EXCEEDED" in str(err.value)
        # So does a query's own SETTINGS clause, which the watchdog catches
        with pytest.raises(DatabaseError) as err:
            client.query(sleepy + ", max_execution_time = 100")
        assert "QUERY_WAS_CANCELLED" in str(err.value)
        # Asking for less is honoured
        with pytest.raises(DatabaseError) as err:
            client.query(SLEEPY.format(tag="less", rows=4), settings={"max_execution_time": 1})
        assert "TIMEOUT_EXCEEDED" in str(err.value)
        assert_healthy(srv)
        client.close()
    finally:
        assert srv.stop() == 0


# ---- handle state -------------------------------------------------------------------------


def test_temporary_tables_belong_to_their_session(server):
    # clickhouse-connect gives every client a session of its own
    one = server.client(session_id=f"one-{secrets.token_hex(4)}")
    two = server.client(session_id=f"two-{secrets.token_hex(4)}")
    auth = server.basic_auth()

    def sessionless(sql: str) -> tuple[int, bytes]:
        status, _, body = server.request("POST", body=sql.encode(), headers=auth)
        return status, body

    try:
        one.command("CREATE TEMPORARY TABLE scratch (x UInt8)")
        one.command("INSERT INTO scratch VALUES (1), (2)")
        assert one.command("SELECT count() FROM scratch") == 2
        with pytest.raises(DatabaseError) as err:
            two.command("SELECT count() FROM scratch")
        assert "UNKNOWN_TABLE" in str(err.value) or "Code: 60" in str(err.value)
        status, body = sessionless("SELECT count() FROM scratch")
        assert status == 404 and b"Code: 60" in body, body
        # Without a session a temporary table lives for its own request only
        assert sessionless("CREATE TEMPORARY TABLE loose (x UInt8)")[0] == 200
        status, body = sessionless("SELECT count() FROM loose")
        assert status == 404 and b"Code: 60" in body, body
        assert one.command("SELECT count() FROM scratch") == 2
    finally:
        for c in (one, two):
            c.close()
    assert_healthy(server)


def test_a_failed_querys_output_never_reaches_the_next_request(server):
    auth = server.basic_auth()
    status, headers, body = server.request(
        "POST", body=b"SELECT sleepEachRow(1) FROM numbers(15) FORMAT JSON", headers=auth
    )
    assert status >= 400 and headers["x-clickhouse-exception-code"] == "160", body
    # A new connection, the same (database, settings) context: only its own answer
    assert server.request("POST", body=b"SELECT 43", headers=auth)[2] == b"43\n"
    assert_healthy(server)
