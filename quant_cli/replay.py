"""``quant replay``: verify session logs, recompute their bars, import third-party captures."""

from __future__ import annotations

import heapq
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import typer

from quant_core import __version__
from quant_core.formats.captures import (
    CaptureError,
    is_cryptofeed_http,
    read_cryptofeed,
    read_cryptofeed_http,
    read_hftbacktest,
)
from quant_core.sessionlog.reader import SessionLogError, SessionReader
from quant_resources.session_lock import holder

if TYPE_CHECKING:
    from quant_core.replay import ReplayResult
    from quant_resources.session_writer import ClosedSession

# Decoding, replay and Parquet (pydantic contracts, polars, pyarrow: seconds to import) are
# imported by the commands that use them, so that every other `quant` command starts fast.

app = typer.Typer(
    help="Session logs: verify the hash chain and the bars, recompute bars, import captures.",
    no_args_is_help=True,
)

GOLDEN_BARS = "expected_bars.parquet"
GOLDEN_SUMMARY = "expected_summary.json"


class CaptureFormat(StrEnum):
    cryptofeed = "cryptofeed"
    hftbacktest = "hftbacktest"


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _writable_or_exit(out: Path) -> None:
    """Exit with a clear message unless ``out``'s folder exists (or can be made) and takes
    files: a path that cannot be written is the user's input, not a crash."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".quant-probe-"):
            pass
    except OSError as exc:
        raise _fail(
            f"FAILED: cannot write {out}: {exc.strerror or exc} ({exc.filename or out.parent})"
        ) from None
    if out.is_dir():
        raise _fail(f"FAILED: cannot write {out}: it is a directory")


def _replay_or_exit(session: Path) -> ReplayResult:
    from quant_core.replay import replay

    try:
        return replay(session)
    except SessionLogError as exc:
        raise _fail(f"FAILED: {exc}") from None


def compare_summary(expected: dict, actual: dict) -> str | None:
    """The first key of a golden summary that the replay does not reproduce."""
    for key in sorted(expected):
        if actual.get(key) != expected[key]:
            return f"summary {key} is {actual.get(key)!r}, expected {expected[key]!r}"
    return None


@app.command()
def verify(
    session: Path = typer.Argument(..., help="session directory or one segment file"),
    golden: Path | None = typer.Option(
        None, "--golden", help=f"directory with {GOLDEN_BARS} (and optionally {GOLDEN_SUMMARY})"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    against_warehouse: bool = typer.Option(
        False,
        "--against-warehouse",
        help="compare the bars (and book snapshots and updates) with ClickHouse (CLICKHOUSE_URL)",
    ),
) -> None:
    """Verify the hash chain and counts, replay, and compare with golden files or ClickHouse.

    Exits 1 naming the first bad record (file, index, byte offset) or the first differing bar.
    A session still being written (its writer holds the lock) gets a read-only check of the
    chain so far, and says so; it has no footer yet, so nothing is replayed or compared.
    """
    import pyarrow.parquet as pq

    from quant_core.replay import compare_bars

    if session.is_dir() and (pid := holder(session)) is not None:
        _verify_open(session, pid, compare=golden is not None or against_warehouse)
        return
    result = _replay_or_exit(session)
    problems = []
    if golden is not None:
        bars_file = golden / GOLDEN_BARS
        if not bars_file.is_file():
            raise _fail(f"{bars_file} does not exist", 2)
        diff = compare_bars(pq.read_table(bars_file), result.bars)
        if diff:
            problems.append(f"bars differ from {bars_file}: {diff}")
        summary_file = golden / GOLDEN_SUMMARY
        if summary_file.is_file():
            diff = compare_summary(json.loads(summary_file.read_text()), result.summary)
            if diff:
                problems.append(f"{summary_file}: {diff}")
    if against_warehouse:
        from quant_resources.replay_check import compare_with_warehouse
        from quant_resources.warehouse import WarehouseResource

        problems += compare_with_warehouse(WarehouseResource(), result).problems()
    if as_json:
        typer.echo(
            json.dumps({**result.summary, "timing": result.timing}, indent=2, sort_keys=True)
        )
    else:
        s = result.summary
        typer.echo(
            f"{session}: chain intact, {s['segments']} segment(s), records {s['records']}, "
            f"events {s['events']}, span {s['span_s']:.3f}s, {s['trades']} trades, "
            f"{s['bars']} bars, {s.get('books', {}).get('snapshots', 0)} book snapshots, "
            f"{s.get('books', {}).get('updates', 0)} book updates, "
            f"final digest {s['final_digest']} "
            f"({result.timing['events_per_s']:,.0f} events/s)"
        )
    if problems:
        raise _fail("FAILED: " + "; ".join(problems))


def _verify_open(session: Path, pid: int, compare: bool) -> None:
    who = f"process {pid}" if pid else "another process"
    if compare:
        raise _fail(
            f"FAILED: {session} is still being written by {who}: its bars can be compared "
            "once it is closed (stopped, or recovered after a crash)"
        )
    try:
        info = SessionReader(session, strict=False).verify()
    except SessionLogError as exc:
        raise _fail(f"FAILED: {exc} (the session is still being written by {who})") from None
    except OSError as exc:  # a rotated segment was compressed and replaced while we read
        raise _fail(f"FAILED: {session} changed while it was read ({exc}); run again") from None
    typer.echo(
        f"{session}: still being written by {who}: chain intact up to record {info.records}, "
        f"{len(info.segments)} segment(s), records {info.counts}; no footer yet, so the bars "
        "are not replayed"
    )


@app.command()
def bars(
    session: Path = typer.Argument(..., help="session directory or one segment file"),
    out: Path = typer.Option(..., "--out", help="Parquet file to write"),
) -> None:
    """Recompute the session's 1m bars (final version per bar) into a Parquet file."""
    _writable_or_exit(out)  # before the replay, which may take a while
    import pyarrow.parquet as pq

    result = _replay_or_exit(session)
    try:
        pq.write_table(result.bars, out)
    except OSError as exc:
        raise _fail(f"FAILED: cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(
        f"{out}: {result.bars.num_rows} bars (final digest {result.summary['final_digest']})"
    )


@app.command("recover")
def recover_cmd(
    session: Path = typer.Argument(..., help="session directory"),
    stop_exchange_ms: int | None = typer.Option(None, help="watermark to record, if known"),
) -> None:
    """Close a session that crashed: cut its torn tail and write the footer."""
    from quant_resources.session_writer import recover

    try:
        result = recover(session, stop_exchange_ms)
    except SessionLogError as exc:
        raise _fail(f"FAILED: {exc}") from None
    state = "already closed" if result.already_closed else f"recovered, cut {result.cut_bytes} B"
    typer.echo(f"{session}: {state}; {result.records} records, digest {result.final_digest}")


@app.command("import")
def import_cmd(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="capture files"),
    fmt: CaptureFormat = typer.Option(..., "--format", help="capture format"),
    out: Path = typer.Option(..., "--out", help="directory that receives SESSION_ID/"),
    session_id: str | None = typer.Option(None, "--session-id"),
) -> None:
    """Convert raw captures into one session log, keeping their original receive times."""
    try:
        closed = import_captures(fmt.value, files, out, session_id)
    except (CaptureError, ValueError, FileExistsError) as exc:
        raise _fail(f"FAILED: {exc}") from None
    typer.echo(
        f"{closed.session_dir}: {closed.records} records in {len(closed.segments)} segment(s), "
        f"final digest {closed.final_digest}"
    )


# --- import -----------------------------------------------------------------------------------


def _streams_of_url(url: str) -> list[str]:
    query = parse_qs(urlsplit(url).query)
    return [s for part in query.get("streams", []) for s in part.split("/") if s]


def _symbols_of(streams: list[str]) -> list[str]:
    return sorted({s.split("@", 1)[0].upper() for s in streams if "@" in s})


_STREAM_FIELD = re.compile(rb'"stream":"([^"]+)"')


def _cryptofeed_source(path: Path, conn_id: int) -> tuple[list[str], Iterator]:
    from quant_core.book_session import captured_snapshot_meta

    lines = path.read_bytes().splitlines()
    if lines and is_cryptofeed_http(lines[0]):
        return [], _cryptofeed_http_items(path, lines, conn_id)
    try:
        url, frames = read_cryptofeed(lines)
        opened = int(Decimal(lines[0].rsplit(b" <-> ", 1)[1].decode()) * 1_000_000_000)
    except (CaptureError, ArithmeticError, IndexError, ValueError) as exc:
        raise CaptureError(f"{path}: {exc}") from None

    def items() -> Iterator:
        yield opened, conn_id, "conn", b"", {"event": "open", "url": url, "file": path.name}
        try:
            for ns, frame in frames:
                snapshot = captured_snapshot_meta(frame, streams)  # this file's depth symbol
                if snapshot is not None:
                    yield ns, conn_id, "rest", frame, snapshot
                else:
                    yield ns, conn_id, "ws", frame, None
        except CaptureError as exc:
            raise CaptureError(f"{path}: {exc}") from None

    streams = _streams_of_url(url)
    return streams, items()


def _cryptofeed_http_items(path: Path, lines: list[bytes], conn_id: int) -> Iterator:
    """A cryptofeed HTTP log's ``/api/v3/depth`` answers as ``rest`` records attributed to the
    symbol of their request URL; its other answers (exchange info, ...) are not market data."""
    from quant_core.book_session import requested_snapshot_meta

    try:
        answers = list(read_cryptofeed_http(lines))  # every line checked before any is used
    except CaptureError as exc:
        raise CaptureError(f"{path}: {exc}") from None
    for ns, url, body in answers:
        meta = requested_snapshot_meta(url)
        if meta is not None:
            yield ns, conn_id, "rest", body, meta


def _hftbacktest_source(path: Path, conn_id: int) -> tuple[list[str], Iterator]:
    from quant_core.book_session import captured_snapshot_meta

    lines = path.read_bytes().splitlines()
    streams: set[str] = set()
    try:  # a first pass validates every line and learns the streams for the header
        for _, frame in read_hftbacktest(lines):
            m = _STREAM_FIELD.search(frame)
            if m:
                streams.add(m.group(1).decode())
    except CaptureError as exc:
        raise CaptureError(f"{path}: {exc}") from None

    def items() -> Iterator:
        for ns, frame in read_hftbacktest(lines):
            snapshot = captured_snapshot_meta(frame, file_streams)  # this file's depth symbol
            if snapshot is not None:
                yield ns, conn_id, "rest", frame, snapshot
            else:
                yield ns, conn_id, "ws", frame, None

    file_streams = sorted(streams)
    return file_streams, items()


def import_captures(
    fmt: str,
    files: list[Path],
    out_dir: Path,
    session_id: str | None = None,
    **writer_options,
) -> ClosedSession:
    """Captures -> one session under ``out_dir``. Files become connections 1, 2, ...; their
    frames are merged by receive time (ties keep file order, then line order).

    Written into a temporary directory and renamed at the end: a bad line leaves nothing.
    ``stop_exchange_ms`` is the largest exchange time among the frames (the capture's last
    moment on the exchange clock), so replay emits the bars whose minute had ended by then.
    """
    from quant_core.decode import BookTickerEvent, Normalizer, TradeEvent
    from quant_resources.session_writer import ClosedSession, SessionWriter

    if fmt not in ("cryptofeed", "hftbacktest"):
        raise ValueError(f"format {fmt!r} must be cryptofeed or hftbacktest")
    source = _cryptofeed_source if fmt == "cryptofeed" else _hftbacktest_source
    streams: list[str] = []
    iterators = []
    for conn_id, path in enumerate(files, start=1):
        file_streams, items = source(Path(path), conn_id)
        streams.extend(s for s in file_streams if s not in streams)
        iterators.append(items)
    merged = heapq.merge(*iterators, key=lambda item: item[0])
    first = next(merged, None)
    if first is None:
        raise ValueError(f"{files[0]}: no frames to import")
    if session_id is None:
        stem = re.sub(r"[^A-Za-z0-9._-]", "-", Path(files[0]).name)
        session_id = f"{fmt}-{stem}-{first[0] // 1_000_000_000}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / session_id).exists():
        raise FileExistsError(f"{out_dir / session_id} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=out_dir))
    try:
        writer = SessionWriter(
            tmp,
            session_id,
            "binance",
            streams,
            _symbols_of(streams),
            __version__,
            start_ns=first[0],
            extra={"imported_from": fmt, "files": [Path(f).name for f in files]},
            **writer_options,
        )
        normalizer = Normalizer()
        stop: int | None = None
        for ns, conn_id, kind, payload, meta in _chain_first(first, merged):
            writer.append(kind, conn_id, ns, payload, meta)
            if kind == "ws":
                ev = normalizer.decode(payload)
                ts = ev.ts_event_ms if isinstance(ev, TradeEvent | BookTickerEvent) else None
                if ts is not None and (stop is None or ts > stop):
                    stop = ts
        closed = writer.close(stop)
        final = out_dir / session_id
        (tmp / session_id).rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ClosedSession(
        final,
        [final / p.name for p in closed.segments],
        closed.records,
        closed.final_digest,
        closed.footer,
    )


def _chain_first(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest
