"""Redis commands from an asyncio event loop without blocking it: one connection per loop,
commands pipelined on it, replies parsed by hiredis.

Why not redis-py here: its synchronous client waits for the reply on the caller's thread, which
on an event loop stalls every other request for the round trip (profiled under load in the data
service: about a millisecond a call on a busy machine, the loop idle meanwhile, and that wait
became the p99 of ``/v1/latest``). Redis answers the commands of one connection in the order
they were sent, so any number of requests can share the connection: each appends a future to a
FIFO, writes its command, and the reply that arrives next belongs to the oldest future.

A command not answered within ``timeout`` closes the connection: every command still waiting
on it fails, and the next one connects anew (a reply that never came would otherwise be paired
with a later command). A reply that arrives for a future already failed is dropped in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import hiredis
from redis.connection import parse_url

from quant_resources.settings import redact_url


class RedisPipelinedError(RuntimeError):
    """The server was unreachable, too slow, or answered an error; never carries a secret."""


def command(*parts: bytes | str) -> bytes:
    """One command in the Redis protocol (RESP), ready to write."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                future = self.waiting.popleft()
                if not future.done():
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked
            self.fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(exc or ConnectionResetError("closed by the server"))

    def fail(self, exc: BaseException) -> None:
        self.closed = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(
                    exc if isinstance(exc, OSError) else ConnectionError(type(exc).__name__)
                )
        if self.transport is not None:
            self.transport.close()


class PipelinedRedis:
    """``await execute(command(...))``; the URL as redis-py takes it (``redis://[:password@]
    host:port/db`` or ``unix://``, user name optional)."""

    def __init__(self, url: str, timeout: float) -> None:
        params = parse_url(url)
        self.display_url = redact_url(url)
        self.path = params.get("path")  # unix://
        self.host, self.port = params.get("host", "localhost"), int(params.get("port", 6379))
        self.timeout = timeout
        self.hello: list[bytes] = []
        if params.get("password"):
            user = [params["username"]] if params.get("username") else []
            self.hello.append(command("AUTH", *user, params["password"]))
        if params.get("db"):
            self.hello.append(command("SELECT", str(params["db"])))
        self.connection: _Connection | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.opening: asyncio.Task | None = None

    async def execute(self, request: bytes):
        """The reply of one command (bytes, int, list, None ...); RedisPipelinedError else."""
        connection = self.connection
        loop = asyncio.get_running_loop()
        if connection is None or connection.closed or self.loop is not loop:
            connection = await self.connect(loop)
        try:
            reply = await self.send(connection, request, loop)
        except (OSError, TimeoutError) as exc:
            raise self.error(exc) from None
        if isinstance(reply, hiredis.ReplyError):
            raise RedisPipelinedError(f"redis at {self.display_url}: {reply}")
        return reply

    def error(self, exc: BaseException) -> RedisPipelinedError:
        return RedisPipelinedError(f"redis at {self.display_url}: {type(exc).__name__}")

    async def send(self, connection: _Connection, request: bytes, loop):
        future = loop.create_future()
        connection.waiting.append(future)
        connection.transport.write(request)
        timer = loop.call_later(self.timeout, self.expire, connection, future)
        try:
            return await future
        finally:
            timer.cancel()

    @staticmethod
    def expire(connection: _Connection, future: asyncio.Future) -> None:
        if not future.done():
            connection.fail(TimeoutError("no reply in time"))

    async def connect(self, loop) -> _Connection:
        # Requests arriving while it connects share one attempt (shielded: a cancelled
        # request must not cancel the others' connection).
        if self.opening is None or self.opening.get_loop() is not loop or self.opening.done():
            self.opening = loop.create_task(self.open(loop))
        try:
            return await asyncio.shield(self.opening)
        except (OSError, TimeoutError) as exc:
            raise self.error(exc) from None

    async def open(self, loop) -> _Connection:
        self.close()
        opened = (
            loop.create_unix_connection(_Connection, self.path)
            if self.path
            else loop.create_connection(_Connection, self.host, self.port)
        )
        _, connection = await asyncio.wait_for(opened, self.timeout)
        for request in self.hello:
            reply = await self.send(connection, request, loop)
            if isinstance(reply, hiredis.ReplyError):
                connection.fail(ConnectionError())
                # The server's words (e.g. WRONGPASS ...) never include the password.
                raise RedisPipelinedError(f"redis at {self.display_url}: {reply}")
        self.connection, self.loop = connection, loop
        return connection

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and not connection.closed:
            # Its event loop may be closed already (a test's loop): nothing is waiting then.
            with contextlib.suppress(RuntimeError):
                connection.fail(ConnectionError("closed"))
