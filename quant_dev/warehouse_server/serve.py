"""Process lifecycle of the warehouse server: directory lock, engine, uvicorn, shutdown."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from quant_dev.warehouse_server.access import Access, AccessMiddleware
from quant_dev.warehouse_server.app import Credentials, create_app
from quant_dev.warehouse_server.credentials import (
    EmptyPassword,
    remove_endpoint,
    stored_password,
    write_endpoint,
)
from quant_dev.warehouse_server.engine import Engine
from quant_dev.warehouse_server.limits import Limits

log = logging.getLogger("quant.warehouse")

LOCK_FILE = ".quant-warehouse.lock"
# The server's working directory, kept empty: chDB resolves unknown table names in its
# ``default`` database as file paths relative to it
WORKDIR = ".quant-warehouse-cwd"


class AlreadyServing(RuntimeError):
    """Another server process holds the directory."""


def lock_directory(directory: Path) -> int:
    """Take the directory's exclusive lock for the life of this process; return its fd."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyServing(
            f"another quant warehouse server already serves {directory} (pid {holder})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class _Server(uvicorn.Server):
    """Uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would kill the process
    before the engine is closed and the directory lock released; handle them and exit normally."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SHUTDOWN_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def header_deadline_protocol(header_timeout: float) -> type:
    """uvicorn's HTTP protocol with a deadline for a request's headers: uvicorn times out idle
    keep-alive connections only after a first response, so a socket that connects and sends
    nothing (or its headers a byte at a time) would otherwise stay open for good."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # uvicorn falls back to h11 without httptools; so do we
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class HeaderDeadlineProtocol(Base):
        deadline: Any = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first bytes of the next request on a kept-alive connection
            before = self.cycle
            super().data_received(data)
            if self.cycle is not before:  # its headers are complete
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self.deadline = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _expire(self) -> None:
            self.deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol


def _allow_open_files(connections: int) -> None:
    # Each connection is a descriptor; chDB needs a few hundred of its own besides
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def serve(
    directory: Path,
    host: str = "127.0.0.1",
    port: int = 8123,
    user: str = "default",
    password: str | None = None,
    log_level: str = "info",
    graceful_timeout: int = 30,
    allowed_hosts: tuple[str, ...] = (),
    cors_origins: tuple[str, ...] = (),
    limits: Limits | None = None,
) -> None:
    """Serve ``directory`` until SIGTERM/SIGINT. Uvicorn stops accepting, lets in-flight requests
    finish (up to ``graceful_timeout`` s), then the app's lifespan closes chdb, flushing data.

    ``password`` None means the one generated once and kept in the directory; an empty one is
    refused. Local clients find the server through the endpoint file written in ``directory``.
    """
    if password is not None and not password:
        raise EmptyPassword("refusing to serve without a password (the password is empty)")
    directory = directory.resolve()
    limits = limits or Limits()
    lock_fd = lock_directory(directory)
    try:
        if password is None:
            password = stored_password(directory)
        workdir = directory / WORKDIR
        workdir.mkdir(exist_ok=True)
        os.chdir(workdir)
        spool_dir = str(directory / ".quant-warehouse-spool")
        engine = Engine(str(directory), limits, spool_dir)
        app = create_app(engine, Credentials(user, password), spool_dir)
        _allow_open_files(limits.max_connections)
        access = Access.of(host, port, allowed_hosts, cors_origins)
        config = uvicorn.Config(
            AccessMiddleware(app, access, engine.version),
            host=host,
            port=port,
            log_level=log_level,
            # Access lines would carry URL parameters, which may hold a password
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=graceful_timeout,
            server_header=False,
            http=header_deadline_protocol(limits.header_timeout),
            limit_concurrency=limits.max_connections,
            timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]  # a float works
        )
        log.warning(
            "quant warehouse %s serving %s on http://%s:%d as user %r",
            engine.version,
            directory,
            host,
            port,
            user,
        )
        write_endpoint(directory, host, port, user, password)
        try:
            _Server(config).run()
        finally:
            remove_endpoint(directory)
            # A no-op after a normal lifespan shutdown; covers a failed startup
            engine.close()
    finally:
        os.close(lock_fd)
