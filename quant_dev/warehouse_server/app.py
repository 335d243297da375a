"""The Starlette app speaking ClickHouse's HTTP interface on top of ``Engine``."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hmac
import json
import logging
import os
import re
import secrets
import socket
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from quant_dev.warehouse_server.engine import Context, Engine, Outcome, Seat, Ticket
from quant_dev.warehouse_server.limits import Limits
from quant_dev.warehouse_server.policy import Policy, Statement
from quant_dev.warehouse_server.protocol import (
    STREAMABLE_FORMATS,
    ArrowStreamJoiner,
    BodyDecoder,
    BodyEncoder,
    ClickHouseError,
    RequestParams,
    authentication_failed,
    choose_response_encoding,
    content_type,
    error,
    insert_head,
    is_read_only,
    is_select,
    output_format,
    parse_params,
    use_statement,
)
from quant_resources.settings import setting  # arch3 (#18): the fault hook

log = logging.getLogger(__name__)

_SPOOL_IN_MEMORY = 64 << 20
_DECODE_BATCH = 4 << 20
_HEAD_BYTES = 256 << 10
_SLICE = 4 << 20
_CACHED_STATEMENTS = 256
_CACHED_STATEMENT_BYTES = 4096


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.password:
            raise ValueError("refusing to serve without a password")

    def check(self, user: str, password: str) -> None:
        # Compare both in constant time so a wrong user and a wrong password look alike
        ok_user = hmac.compare_digest(user.encode(), self.user.encode())
        ok_password = hmac.compare_digest(password.encode(), self.password.encode())
        if not (ok_user and ok_password):
            raise authentication_failed(user)


def request_credentials(request: Request, params: dict[str, str]) -> tuple[str, str]:
    """Basic auth, else X-ClickHouse-User/Key headers, else user/password URL parameters."""
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise authentication_failed("default") from None
        return user or "default", password
    if "x-clickhouse-user" in request.headers or "x-clickhouse-key" in request.headers:
        return (
            request.headers.get("x-clickhouse-user") or "default",
            request.headers.get("x-clickhouse-key", ""),
        )
    return params.get("user") or "default", params.get("password", "")


@dataclass
class Session:
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    expires: float = 0.0
    busy: bool = False
    # The session's own chDB handle: its temporary tables are visible to it alone
    seat: Seat = field(default_factory=Seat)


class Sessions:
    """HTTP sessions: the ``USE`` database and ``SET`` settings kept between requests.
    Touched only from the event loop, so no lock."""

    def __init__(self, end: Callable[[Seat], None]) -> None:
        self._sessions: dict[str, Session] = {}
        self._end = end

    def acquire(self, params: RequestParams) -> Session | None:
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if not s.busy and s.expires < now]:
            self._end(self._sessions.pop(key).seat)
        if params.session_id is None:
            return None
        session = self._sessions.get(params.session_id)
        if session is None:
            if params.session_check:
                raise error("SESSION_NOT_FOUND", f"Session {params.session_id} not found")
            session = self._sessions[params.session_id] = Session()
        if session.busy:
            raise error(
                "SESSION_IS_LOCKED", f"Session {params.session_id} is locked by a concurrent client"
            )
        session.busy = True
        session.timeout = params.session_timeout
        return session

    @staticmethod
    def release(session: Session | None) -> None:
        if session is not None:
            session.busy = False
            session.expires = time.monotonic() + session.timeout


class _Body:
    """A request body after Content-Encoding decoding, spooled to disk past 64 MiB.

    Refuses to grow past ``limits.max_query_bytes`` unless its head is an ``INSERT ... FORMAT``
    whose rows follow, which may grow to ``limits.max_decompressed_bytes``."""

    def __init__(self, spool_dir: str, limits: Limits, prefix: bytes):
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY, dir=spool_dir)  # noqa: SIM115
        self.size = 0
        self._limits = limits
        self._limit = limits.max_query_bytes
        self._prefix = prefix
        self._head = bytearray()
        self._classified = False

    def write(self, data: bytes) -> None:
        if len(self._head) < _HEAD_BYTES:
            self._head += data[: _HEAD_BYTES - len(self._head)]
        self.size += len(data)
        if self.size > self._limit and not self._classified:
            self._classified = True
            head = insert_head(self._prefix + bytes(self._head))
            if head is not None and not _looks_like_values(head.statement):
                self._limit = self._limits.max_decompressed_bytes
        if self.size > self._limit:
            if self._limit == self._limits.max_query_bytes:
                raise body_too_large(f"the query is longer than max_query_bytes {self._limit}")
            raise body_too_large(
                f"the INSERT data decompresses to more than max_decompressed_bytes {self._limit}"
            )
        self.file.write(data)

    def read(self, offset: int = 0, size: int = -1) -> bytes:
        self.file.seek(offset)
        return self.file.read(size)

    def chunks(self, offset: int) -> Iterator[bytes]:
        self.file.seek(offset)
        while chunk := self.file.read(_SLICE):
            yield chunk

    def close(self) -> None:
        self.file.close()


def body_too_large(detail: str) -> ClickHouseError:
    return error("QUERY_IS_TOO_LARGE", f"Request body too large: {detail}")


async def _read_body(request: Request, spool_dir: str, limits: Limits, prefix: bytes) -> _Body:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limits.max_body_bytes:
        raise body_too_large(
            f"Content-Length {int(length)} exceeds max_body_bytes {limits.max_body_bytes}"
        )
    body = _Body(spool_dir, limits, prefix)
    try:
        # The decoder checks the size as it goes, so a decompression bomb stops at the limit
        decoder = BodyDecoder(request.headers.get("content-encoding"), body.write)

        def decode(parts: list[bytes], final: bool) -> None:
            decoder.feed(b"".join(parts))
            if final:
                decoder.finish()

        pending: list[bytes] = []
        pending_size = received = 0
        chunks = request.stream().__aiter__()
        while True:
            with anyio.move_on_after(limits.body_timeout) as wait:
                chunk = await anext(chunks, None)
            if wait.cancelled_caught:
                raise error(
                    "SOCKET_TIMEOUT",
                    f"Timeout exceeded while reading the request body: nothing arrived for "
                    f"{limits.body_timeout:g} s",
                )
            if chunk is None:
                break
            received += len(chunk)
            if received > limits.max_body_bytes:
                raise body_too_large(f"more than max_body_bytes {limits.max_body_bytes} sent")
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= _DECODE_BATCH:
                await anyio.to_thread.run_sync(decode, pending, False)
                pending, pending_size = [], 0
        if pending_size >= _HEAD_BYTES:
            await anyio.to_thread.run_sync(decode, pending, True)
        else:
            decode(pending, True)
    except BaseException:
        body.close()
        raise
    return body


async def _guarded(request: Request, call: Callable[[], Any], ticket: Ticket) -> Any:
    """Run ``call`` in a worker thread; if the client disconnects meanwhile, cancel ``ticket``
    (which kills the query), so a client that gives up does not leave its query running."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        await anyio.to_thread.run_sync(ticket.cancel)

    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            result = await anyio.to_thread.run_sync(call)
        except Exception as exc:  # raised below, not wrapped in the group's ExceptionGroup
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


class _CleanupResponse(StreamingResponse):
    """A streaming response that runs its cleanup hooks once, however it ends: right after the
    last piece (so a client's next request finds its session free), or on error/disconnect.
    A client that reads nothing for ``send_timeout`` seconds is dropped, which frees the result
    it left waiting in memory or on disk."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        hooks: list[Callable[[], None]],
        send_timeout: float,
        **kwargs,
    ):
        super().__init__(content, **kwargs)
        self.hooks = hooks
        self.send_timeout = send_timeout

    async def __call__(self, scope, receive, send) -> None:
        async def send_in_time(message) -> None:
            with anyio.fail_after(self.send_timeout):
                await send(message)

        try:
            await super().__call__(scope, receive, send_in_time)
        except TimeoutError:
            # The response stays incomplete, so uvicorn closes the connection
            log.warning("dropped a client that read nothing for %g s", self.send_timeout)
        finally:
            _run_hooks(self.hooks)


def _run_hooks(hooks: list[Callable[[], None]]) -> None:
    while hooks:
        hooks.pop(0)()


def _exception_block(exc: ClickHouseError, tag: str, version: str) -> bytes:
    """How ClickHouse reports an error after the response has started (tagged, v25.11+)."""
    message = exc.body(version).encode()
    return (
        b"__exception__\r\n" + tag.encode() + b"\r\n" + message
        + f"{len(message)} {tag}".encode() + b"\r\n__exception__\r\n"
    )  # fmt: skip


class WarehouseApp:
    def __init__(self, engine: Engine, credentials: Credentials, spool_dir: str):
        self.engine = engine
        self.credentials = credentials
        self.policy = Policy(*engine.registry())
        # Statements allowed before, by (text, parameters, context, method): a client repeats
        # the same few (an insert's head, a polling query), each parse costs a few ms
        self.allowed: OrderedDict[tuple, Statement] = OrderedDict()
        self.spool_dir = spool_dir
        self.limits = engine.limits
        self.sessions = Sessions(engine.release)
        self.display_name = socket.gethostname()
        # arch3 (#18): a fault hook for tests: while the file this names exists, a statement
        # matching the regular expression it holds fails as a server-side error would.
        self.refuse_file = setting("QUANT_WAREHOUSE_REFUSE_FILE")

    # ---- responses --------------------------------------------------------------------------

    def _headers(self, query_id: str) -> dict[str, str]:
        return {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.engine.timezone,
            "X-ClickHouse-Server-Display-Name": self.display_name,
        }

    def error_response(self, exc: ClickHouseError, query_id: str) -> Response:
        headers = self._headers(query_id)
        headers["X-ClickHouse-Exception-Code"] = str(exc.code)
        return PlainTextResponse(exc.body(self.engine.version), exc.http_status, headers=headers)

    def _respond(
        self,
        pieces: Iterator[bytes],
        *,
        request: Request,
        params: RequestParams,
        query_id: str,
        fmt: str | None,
        summary: dict[str, str],
        cleanup: Callable[[], None],
    ) -> Response:
        headers = self._headers(query_id)
        headers["X-ClickHouse-Summary"] = json.dumps(summary, separators=(",", ":"))
        if fmt is not None:
            headers["X-ClickHouse-Format"] = fmt
        tag = secrets.token_hex(8)
        headers["X-ClickHouse-Exception-Tag"] = tag
        encoding = None
        if params.compress_response:
            encoding = choose_response_encoding(request.headers.get("accept-encoding"))
        if encoding:
            headers["Content-Encoding"] = encoding
        encoder = BodyEncoder(encoding) if encoding else None
        version = self.engine.version

        ended = False
        lookahead: list = []

        def pull() -> bytes | ClickHouseError | None:
            try:
                return next(pieces, None)
            except ClickHouseError as exc:
                return exc

        def next_piece() -> tuple[bytes, bool]:
            # Runs in a worker thread (pulling from the engine and compressing both block). Looks
            # one chunk ahead so the last piece is known before it is sent: the request's hooks
            # must run before the client can see the end and reuse its session.
            nonlocal ended
            if ended:
                return b"", True
            current = lookahead.pop() if lookahead else pull()
            following = None if current is None or isinstance(current, Exception) else pull()
            if isinstance(following, bytes):
                lookahead.append(following)
                return (encoder.compress(current) if encoder else current), False
            out = []
            for item in (current, following):
                if isinstance(item, ClickHouseError):
                    item = _exception_block(item, tag, version)
                if item is not None:
                    out.append(encoder.compress(item) if encoder else item)
            ended = True
            if encoder is not None:
                out.append(encoder.finish())
            return b"".join(out), True

        hooks = [cleanup]

        async def body() -> AsyncIterator[bytes]:
            while True:
                # Abandoned if the client leaves while it waits: the cleanup hooks then cancel
                # the stream, which wakes the thread, instead of waiting for the next chunk
                piece, last = await anyio.to_thread.run_sync(next_piece, abandon_on_cancel=True)
                if last:
                    _run_hooks(hooks)
                if piece:
                    yield piece
                if last:
                    return

        media_type = content_type(fmt) if fmt else "text/plain; charset=UTF-8"
        return _CleanupResponse(
            body(),
            hooks,
            send_timeout=self.limits.body_timeout,
            headers=headers,
            media_type=media_type,
        )

    # ---- endpoints --------------------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    async def query(self, request: Request) -> Response:
        raw_params = dict(request.query_params)
        query_id = raw_params.get("query_id") or str(uuid.uuid4())
        if request.method == "GET" and "query" not in raw_params:
            return PlainTextResponse("Ok.\n")
        session = None
        body: _Body | None = None
        try:
            self.credentials.check(*request_credentials(request, raw_params))
            params = parse_params(raw_params)
            self.policy.check_settings(params.settings)
            session = self.sessions.acquire(params)
            prefix = (params.query + "\n").encode() if params.query else b""
            body = await _read_body(request, self.spool_dir, self.limits, prefix)
            response = await self._execute(request, params, query_id, session, body)
        except ClientDisconnect:
            # Nobody is left to answer; ClickHouse logs these as "client closed the connection"
            self._finish(session, body)
            return Response(status_code=499)
        except ClickHouseError as exc:
            self._finish(session, body)
            return self.error_response(exc, query_id)
        except Exception as exc:
            self._finish(session, body)
            log.exception("unexpected failure serving a query")
            return self.error_response(ClickHouseError(1001, repr(exc), "STD_EXCEPTION"), query_id)
        if isinstance(response, _CleanupResponse):
            response.hooks.append(lambda: self._finish(session, body))
        else:
            self._finish(session, body)
        return response

    def _finish(self, session: Session | None, body: _Body | None) -> None:
        self.sessions.release(session)
        if body is not None:
            body.close()

    async def _execute(
        self,
        request: Request,
        params: RequestParams,
        query_id: str,
        session: Session | None,
        body: _Body,
    ) -> Response:
        prefix = (params.query + "\n").encode() if params.query else b""
        database = params.database or (session.database if session else None)
        settings = {**(session.settings if session else {}), **params.settings}
        ctx = Context.of(database, settings)
        seat = session.seat if session else None
        respond = dict(request=request, params=params, query_id=query_id)

        head = insert_head(prefix + body.read(0, _HEAD_BYTES))
        if head is not None and not _looks_like_values(head.statement):
            # The rows that follow are data, not SQL: the statement is judged on its own
            await self._guard(f"{head.statement} FORMAT {head.fmt}", request, params, ctx)
            data_at = head.data_offset - len(prefix)
            if data_at < 0:
                chunks = _chain(prefix[head.data_offset :], body.chunks(0))
            else:
                chunks = body.chunks(data_at)
            outcome = await anyio.to_thread.run_sync(
                self.engine.insert, head.statement, head.fmt, chunks, ctx, seat
            )
            return self._respond(
                iter(()), fmt=None, summary=outcome.summary, cleanup=_noop, **respond
            )

        raw = prefix + body.read()
        try:
            query = raw.decode().strip()
        except UnicodeDecodeError:
            raise error("SYNTAX_ERROR", "Syntax error: the query is not valid UTF-8") from None
        if not query:
            raise error("SYNTAX_ERROR", "Empty query")
        statement = await self._guard(query, request, params, ctx)

        # Session state lives here, never on the engine's shared handles
        database_to_use = use_statement(query)
        if database_to_use is not None:
            await anyio.to_thread.run_sync(self.engine.check_database, database_to_use)
            if session is not None:
                session.database = database_to_use
            return self._respond(iter(()), fmt=None, summary={}, cleanup=_noop, **respond)
        if statement.is_set:
            base = session.settings if session else {}
            updated = await anyio.to_thread.run_sync(self.engine.apply_set, base, query)
            # Judged on what the engine says the SET changed, not on its text
            self.policy.check_settings(updated)
            if session is not None:
                session.settings = updated
            return self._respond(iter(()), fmt=None, summary={}, cleanup=_noop, **respond)

        fmt = output_format(query, params.default_format)
        produces_result = is_read_only(query)
        if is_select(query) and not params.wait_end_of_query and fmt.lower() in STREAMABLE_FORMATS:
            return await self._stream(request, query, fmt, params, ctx, seat, respond)

        ticket = Ticket()
        call = functools.partial(self.engine.query, query, fmt, params.bindings, ctx, seat, ticket)
        # Only a read-only query is cancelled when its client leaves: a write runs to its end
        outcome: Outcome = await (
            _guarded(request, call, ticket) if produces_result else anyio.to_thread.run_sync(call)
        )
        has_result = produces_result or len(outcome.payload) > 0
        return self._respond(
            _slices(outcome),
            fmt=fmt if has_result else None,
            summary=outcome.summary,
            cleanup=_noop,
            **respond,
        )

    async def _guard(
        self, sql: str, request: Request, params: RequestParams, ctx: Context
    ) -> Statement:
        """Refuse, before execution, a statement that would reach the host or, over GET, write."""
        if self.refuse_file:  # arch3 (#18): the test fault hook (see __init__)
            refuse_injected(self.refuse_file, sql)
        key = (sql, tuple(sorted(params.bindings.items())), ctx, request.method)
        if (statement := self.allowed.get(key)) is not None:
            self.allowed.move_to_end(key)
            return statement
        # One statement only: chDB would run every one, EXPLAIN AST or not
        self.policy.lex(sql)
        tree = await anyio.to_thread.run_sync(self.engine.explain_ast, sql, params.bindings, ctx)
        statement = self.policy.check(sql, tree, request.method)
        if len(sql) <= _CACHED_STATEMENT_BYTES:
            self.allowed[key] = statement
            while len(self.allowed) > _CACHED_STATEMENTS:
                self.allowed.popitem(last=False)
        return statement

    async def _stream(
        self,
        request: Request,
        query: str,
        fmt: str,
        params: RequestParams,
        ctx: Context,
        seat: Seat | None,
        respond: dict,
    ) -> Response:
        ticket = Ticket()
        stream = self.engine.stream(query, fmt, params.bindings, ctx, seat, ticket)
        try:
            # Wait for the first chunk so that a failing query still gets a real error status
            first = await _guarded(request, stream.get, ticket)
        except BaseException:
            stream.cancel()
            raise
        joiner = ArrowStreamJoiner() if fmt.lower() == "arrowstream" else None
        if joiner is not None and first is None:
            # No block at all: only a one-shot query writes the schema of an empty result
            outcome = await anyio.to_thread.run_sync(
                self.engine.query, query, fmt, params.bindings, ctx, seat
            )
            piece = bytes(outcome.payload)
            return self._respond(
                iter((piece,)), fmt=fmt, summary=outcome.summary, cleanup=_noop, **respond
            )

        def pieces() -> Iterator[bytes]:
            chunk = first
            while chunk is not None:
                yield joiner.feed(chunk) if joiner else chunk
                chunk = stream.get()
            if joiner is not None and first is not None:
                yield joiner.finish()

        summary = {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0"}
        return self._respond(pieces(), fmt=fmt, summary=summary, cleanup=stream.cancel, **respond)


def refuse_injected(path: str, sql: str) -> None:
    """arch3 (#18): raise the injected fault when ``sql`` matches the pattern in ``path``."""
    try:
        with open(path) as file:
            pattern = file.read().strip()
    except FileNotFoundError:
        return
    if pattern and re.search(pattern, sql):
        raise error("ABORTED", f"fault injected for statements matching {pattern!r}")


def _looks_like_values(statement: str) -> bool:
    # ``INSERT ... VALUES ('x FORMAT y')`` or ``INSERT ... SELECT`` is a whole query, not a head
    upper = statement.upper()
    return " VALUES" in upper or "SELECT " in upper or "\nSELECT" in upper


def _slices(outcome: Outcome) -> Iterator[bytes]:
    # The payload is a view into chdb's result buffer, valid only while this frame holds
    # ``outcome`` (and with it the chdb result)
    payload = outcome.payload
    for start in range(0, len(payload), _SLICE):
        yield bytes(payload[start : start + _SLICE])


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _noop() -> None:
    return None


def create_app(engine: Engine, credentials: Credentials, spool_dir: str) -> Starlette:
    os.makedirs(spool_dir, exist_ok=True)
    warehouse = WarehouseApp(engine, credentials, spool_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        # Uvicorn has drained in-flight requests by now; closing flushes chdb's data
        await anyio.to_thread.run_sync(engine.close)

    return Starlette(
        routes=[
            Route("/ping", warehouse.ping, methods=["GET", "HEAD"]),
            Route("/", warehouse.query, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )
