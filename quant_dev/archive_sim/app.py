"""``quant sim binance-archive``: Binance's public data archive over HTTP, on loopback.

Serves ``/data/spot/{daily,monthly}/{aggTrades,trades,klines}/SYMBOL/...zip`` and their
``.CHECKSUM`` files in the real layout for the configured symbols and days (a month file for
every calendar month wholly inside the range); anything else is 404. Files are generated on
first request (``generate``) and the most recent few kept in memory. Requests carry no body
(413) and small headers (uvicorn's limit); GET and HEAD only.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import date

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from quant_core.formats.binance_archive import KINDS, Period, archive_path, file_name
from quant_dev.archive_sim import generate
from quant_dev.archive_sim.faults import Fault, parse

_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]{2,20})-(?P<kind>aggTrades|trades|1m)-"
    r"(?P<year>\d{4})-(?P<month>\d{2})(?:-(?P<day>\d{2}))?\.zip(?P<checksum>\.CHECKSUM)?$"
)
MAX_HEADER_BYTES = 16 * 1024


@dataclass
class ArchiveSimConfig:
    symbols: list[str]
    first: date
    last: date
    seed: int = 7
    aggs_per_day: int = 20_000
    header_from: date | None = None  # files starting on/after this date have a header row
    faults: str = ""
    cache_files: int = 6

    def has(self, period: Period) -> bool:
        return self.first <= period.start and period.end <= date.fromordinal(
            self.last.toordinal() + 1
        )


def _resolve(path: str, config: ArchiveSimConfig) -> tuple[str, str, Period, bool] | None:
    """(kind, symbol, period, is_checksum) of a served path, else None."""
    match = _NAME.match(path.rsplit("/", 1)[-1])
    if match is None:
        return None
    kind = "klines" if match["kind"] == "1m" else match["kind"]
    try:
        year, month = int(match["year"]), int(match["month"])
        period = (
            Period.day(date(year, month, int(match["day"])))
            if match["day"]
            else Period.month(year, month)
        )
    except ValueError:
        return None
    symbol = match["symbol"]
    expected = archive_path(kind, symbol, period) + (".CHECKSUM" if match["checksum"] else "")
    if path.lstrip("/") != expected or symbol not in config.symbols or not config.has(period):
        return None
    return kind, symbol, period, bool(match["checksum"])


ROW_DAMAGE = ("badrow", "columns", "outside", "zeroprice")
TIME_FIELD = {"aggTrades": 5, "trades": 4, "klines": 0}
DAY_MS = 86_400_000


def damaged_row(line: bytes, kind: str, damage: str) -> bytes:
    """One CSV line with ``damage``: ``badrow`` price 'abc', ``columns`` its last field
    dropped, ``outside`` its time a day later (same unit), ``zeroprice`` price 0."""
    fields = line.split(b",")
    if damage == "badrow":
        fields[1] = b"abc"
    elif damage == "zeroprice":
        fields[1] = b"0"
    elif damage == "columns":
        fields = fields[:-1]
    else:
        stamp = int(fields[TIME_FIELD[kind]])
        fields[TIME_FIELD[kind]] = str(stamp + DAY_MS * (1000 if stamp >= 10**14 else 1)).encode()
    return b",".join(fields)


class _HangUp(Response):
    """Promises the whole body, sends half, then fails so the server drops the connection."""

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2]})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        raise ConnectionAbortedError("simulated cut mid-body")


def create_app(config: ArchiveSimConfig) -> Starlette:
    faults = parse(config.faults)
    lock = threading.Lock()
    generating = threading.Lock()
    failures: Counter = Counter()

    @functools.lru_cache(maxsize=config.cache_files)
    def files(kind: str, symbol: str, period: Period, damage: str | None) -> tuple[bytes, bytes]:
        header = config.header_from is not None and period.start >= config.header_from
        csv = generate.period_csv(kind, symbol, period, config.seed, config.aggs_per_day, header)
        name = file_name(kind, symbol, period)
        body = generate.zipped(kind, symbol, period, csv)
        checksum = generate.checksum_text(name, body)
        if damage == "checksum":
            # One price changed to text: parsed first, this would fail as a bad row instead.
            first = csv.index(b",") + 1
            csv = csv[:first] + b"x" + csv[first + 1 :]
            body = generate.zipped(kind, symbol, period, csv)
        elif damage in ROW_DAMAGE:
            # The third line is damaged; the checksum matches (the parser must say).
            lines = csv.split(b"\n")
            lines[2] = damaged_row(lines[2], kind, damage)
            body = generate.zipped(kind, symbol, period, b"\n".join(lines))
            checksum = generate.checksum_text(name, body)
        elif damage == "corrupt":
            middle = len(body) // 2
            body = body[:middle] + bytes(64) + body[middle + 64 :]
            checksum = generate.checksum_text(name, body)
        return body, checksum

    def fault(kind: str, stem: str) -> Fault | None:
        return next((f for f in faults if f.kind == kind and f.matches(stem)), None)

    async def serve(request: Request) -> Response:
        if sum(len(k) + len(v) for k, v in request.headers.raw) > MAX_HEADER_BYTES:
            return PlainTextResponse("request headers too large", 431)
        if int(request.headers.get("content-length") or 0) > 0:
            return PlainTextResponse("requests carry no body", 413)
        found = _resolve(request.url.path, config)
        if found is None:
            return PlainTextResponse("Not Found", 404)
        kind, symbol, period, is_checksum = found
        stem = file_name(kind, symbol, period).removesuffix(".zip")
        if fault("missing", stem):
            return PlainTextResponse("Not Found", 404)
        if slow := fault("slow", stem):
            await asyncio.sleep(slow.argument if slow.argument is not None else 2.0)
        if not is_checksum and (flaky := fault("5xx", stem)):
            with lock:
                failures[stem] += 1
                failing = failures[stem] <= (flaky.argument if flaky.argument is not None else 2)
            if failing:
                return PlainTextResponse("Service Unavailable", 503)
        damages = ("checksum", "corrupt", *ROW_DAMAGE)
        damage = next((k for k in damages if fault(k, stem)), None)
        body, checksum = await asyncio.to_thread(
            _locked, generating, files, kind, symbol, period, damage
        )
        if is_checksum:
            return Response(checksum, 200, media_type="text/plain")
        if fault("truncate", stem):
            return _HangUp(body, 200, media_type="application/zip")
        return Response(body, 200, media_type="application/zip")

    return Starlette(routes=[Route("/data/{rest:path}", serve, methods=["GET", "HEAD"])])


def _locked(lock: threading.Lock, files, *args):
    # One generation at a time: the zip and its checksum are asked for together.
    with lock:
        return files(*args)


def serve(config: ArchiveSimConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    for symbol in config.symbols:
        for kind in KINDS:
            file_name(kind, symbol, Period.day(config.first))  # refuses a bad symbol early
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown}:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="h11",
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
