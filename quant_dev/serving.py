"""Redis and the data service as local child processes, for `make demo`, `make dev` and tests.

``RedisServer``: a private ``redis-server`` on loopback with a password required, started by
the one launcher (``quant_dev.processes.Child``) like every other child. Its config
(with the password) and data live in one folder, mode 0700 / files 0600; the password is
generated once and kept there (``password``), so a restart (or the next `make dev`) finds
the same one. The config file, not argv, carries the password: no process listing shows it.
Its data is persisted in that folder by an append-only file fsynced before each reply
(``appendfsync always``: the live sink writes one pipeline per flush, so that is one fsync a
flush), so a stream entry Redis acknowledged survives a restart, even a crash; nothing is
written outside the folder, and the settings that could move files elsewhere (``dir``,
``dbfilename``, ...) cannot be changed by a client (``enable-protected-configs no``).

``api_server``: ``quant serve api`` with the bearer token kept in ``QUANT_HOME/api-token``
(generated once, 0600). Whoever wants to call it reads the file; nothing prints the token.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from quant_dev.processes import Child, free_port, quant, tail
from quant_resources.settings import redis_url

TOKEN_FILE = "api-token"
API_PORT = 8000
LATEST_PATH = "/v1/latest/BTCUSDT?source=binance"  # what the demo and `make dev` show


def secret_file(path: Path) -> str:
    """The secret kept in ``path`` (mode 0600), generated on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(16) + "\n")
    return path.read_text().strip()


def ensure_redis_server() -> str | None:
    """The ``redis-server`` binary; installed with apt-get (Debian's package, as root or with
    password-less sudo, like scripts/test-services) when missing. None when that fails."""
    found = shutil.which("redis-server")
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "redis-server"]):
        if subprocess.run([*prefix, *step], env=env, capture_output=True).returncode != 0:
            return None
    return shutil.which("redis-server")


class RedisServer:
    """A private redis-server on ``127.0.0.1:port``; ``start``/``stop`` may be repeated (same
    port and password). ``persist`` (the default) keeps the data in the folder's append-only
    file across restarts; without it a restart starts empty (tests of the refill)."""

    def __init__(self, folder: Path, port: int | None = None, persist: bool = True) -> None:
        self.binary = ensure_redis_server()
        if self.binary is None:
            raise FileNotFoundError("redis-server is not installed and could not be installed")
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        self.folder = folder
        self.port = port or free_port()
        self.password = secret_file(folder / "password")
        self.conf = folder / "redis.conf"
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(
                f"bind 127.0.0.1\nport {self.port}\nrequirepass {self.password}\n"
                f"protected-mode yes\ndir {folder}\nlogfile {folder / 'redis.log'}\n"
                "daemonize no\nenable-protected-configs no\nenable-debug-command no\n"
                'enable-module-command no\nsave ""\n'
                + (
                    "appendonly yes\nappendfsync always\nappenddirname appendonly\n"
                    if persist
                    else "appendonly no\n"
                )
            )
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start it (a ``Child``, like every other process) and return once an authenticated
        PING answers."""
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            self.child = Child(
                f"redis-server on port {self.port}",
                [self.binary, str(self.conf)],
                answers,
                start_timeout=timeout_s,
                umask=0o077,  # its log and data files: 0600, like the config
            )
        except RuntimeError as exc:  # it logs to its file, not to the output Child keeps
            raise RuntimeError(f"{exc}\n{tail(self.folder / 'redis.log')}") from None
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM (it rewrites nothing: the append-only file is already fsynced), SIGKILL
        after 30 s."""
        if self.child is not None:
            self.child.stop(30)
        self.child = None


@contextlib.contextmanager
def redis_server(folder: Path, persist: bool = True) -> Iterator[RedisServer]:
    server = RedisServer(folder, persist=persist)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class ApiServer:
    """``quant serve api`` on loopback (``port``, else 8000 when free, else a free one), with
    the token of ``QUANT_HOME/api-token``. ``start`` returns at once (it boots while the caller
    does something else); ``wait_ready`` returns once ``/v1/health`` answers."""

    def __init__(self, home: Path, port: int | None = None, env: dict | None = None) -> None:
        self.home = home
        self.token = secret_file(home / TOKEN_FILE)
        # A port we picked may be taken between the check and the bind (another demo, make dev,
        # a parallel test): then wait_ready starts again on a free one; a port asked for is kept.
        self.chosen = port is None
        self.port = port or (API_PORT if port_free(API_PORT) else free_port())
        self.env = {**(env or {}), "QUANT_HOME": str(home), "QUANT_API_TOKENS": self.token}
        self.child: Child | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        command = quant("serve", "api", "--port", str(self.port), "--log-level", "warning")
        self.child = Child("quant serve api", command, None, env=self.env)
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> str:
        deadline = time.monotonic() + timeout_s
        # A route that needs the token: only our server accepts it (health needs none).
        request = urllib.request.Request(
            f"{self.base}/v1/sessions", headers={"Authorization": f"Bearer {self.token}"}
        )
        while True:  # any answer but 401/403 (a backend down is a 5xx) means ours is up
            try:
                urllib.request.urlopen(request, timeout=2).close()
                return self.base
            except urllib.error.HTTPError as exc:
                # 401/403: another server holds the port (it does not know our token).
                if exc.code not in (401, 403):
                    return self.base
            except OSError:
                pass
            if self.child.process.poll() is not None:
                if self.chosen and not port_free(self.port):
                    self.port = free_port()
                    return self.start().wait_ready(max(1.0, deadline - time.monotonic()))
                output = "".join(self.child.lines)[-2000:]
                raise RuntimeError(f"quant serve api did not start:\n{output}")
            if time.monotonic() > deadline:
                output = "".join(self.child.lines)[-2000:]
                raise RuntimeError(f"quant serve api did not answer in time:\n{output}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


@contextlib.contextmanager
def api_server(home: Path, port: int | None = None, env: dict | None = None) -> Iterator[str]:
    """An ``ApiServer``, started and ready; yields its base URL."""
    server = ApiServer(home, port, env).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def curl_line(home: Path, base: str, path: str) -> str:
    """A command a user can paste: the token is read from its file, never printed."""
    return f"curl -sH \"Authorization: Bearer $(cat {home / TOKEN_FILE})\" '{base}{path}'"


@contextlib.contextmanager
def local_redis(home: Path) -> Iterator[tuple[str | None, str]]:
    """``REDIS_URL`` when set, else a private redis-server with its data (persisted, so the
    next `make dev` starts with the same latest values and streams) and password in
    ``QUANT_HOME/redis``.
    Yields the URL (None when redis-server is missing and cannot be installed) and a note."""
    configured = redis_url()
    if configured:
        yield configured, "(from REDIS_URL)"
        return
    folder = home / "redis"
    try:
        server = RedisServer(folder)
    except FileNotFoundError as exc:
        yield None, f"not started: {exc}; /v1/latest answers from ClickHouse"
        return
    server.start()
    try:
        yield server.url, f"data and password (mode 0600) in {folder}"
    finally:
        server.stop()
