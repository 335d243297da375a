"""Binance's public data archive (daily and monthly spot zips with sha256 checksums).

For every file: the ``.CHECKSUM`` first (small, size-capped), then the zip streamed to a
temporary file while its sha256 is computed; the digest is compared BEFORE the zip is opened,
so a tampered or cut file is never parsed. The CSV member is then streamed out of the zip in
blocks (``quant_core.formats.binance_archive.read_batches``), so memory stays bounded by the
block size, not the day.

Outcomes are distinct types:

* ``ArchiveMissing`` (a ``LookupError``, not an ``ArchiveError``): 404, the file is not
  published (yet), or the symbol did not trade that day. Not retried.
* ``ArchiveUnavailable``: 5xx, 429, timeouts, refused or cut connections, retried with
  exponential backoff and jitter up to ``attempts`` times, then raised.
* ``ChecksumMismatch``, ``CorruptArchive``, ``TruncatedDownload``: the file's bytes are wrong.
  A short body is retried (the usual cause is the connection); the others are not.
* ``ArchiveFormatError`` (from the parser): a bad row, naming file, line and value.

Every error names the file.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from quant_core.formats.binance_archive import (
    Period,
    archive_path,
    file_name,
    member_name,
    parse_checksum,
    read_batches,
    schema,
)
from quant_resources.binance_archive_cache import DEFAULT_MAX_BYTES, MonthCache
from quant_resources.settings import binance_archive_url, quant_home

CHUNK_BYTES = 1 << 20
MAX_CHECKSUM_BYTES = 1024


class ArchiveMissing(LookupError):
    """The archive has no such file (HTTP 404): not published yet, or no trading that day."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name}: not in the archive (404)")
        self.file = name


class ArchiveError(RuntimeError):
    """A file that exists but could not be fetched or trusted; ``file`` names it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.file = name


class ArchiveUnavailable(ArchiveError):
    """Server errors, rate limits or timeouts outlasted the retries."""


class ChecksumMismatch(ArchiveError):
    pass


class CorruptArchive(ArchiveError):
    pass


class TruncatedDownload(ArchiveError):
    pass


class _Transient(Exception):
    """One failed attempt worth another (becomes ``ArchiveUnavailable`` or the final error)."""

    def __init__(self, final: ArchiveError) -> None:
        super().__init__(str(final))
        self.final = final


@dataclass(frozen=True)
class Fetched:
    """One day (or, from ``table(...)`` callers, one file) of a range: ``table`` is None when
    the archive has no rows for it; ``file`` names the archive file the rows came from (a
    month file for a day of a complete past month)."""

    period: Period
    table: pa.Table | None
    file: str


class ArchiveClient:
    """Downloads, verifies and parses archive files. Thread-compatible, not thread-safe (one
    ``requests.Session``): give each thread its own client."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout_seconds: float = 60.0,
        attempts: int = 5,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 20.0,
        temp_dir: str | Path | None = None,
        block_bytes: int = 8 << 20,
        cache_dir: str | Path | None = None,
        cache_max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.base_url = (base_url or binance_archive_url()).rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.temp_dir = temp_dir
        self.block_bytes = block_bytes
        self.months = MonthCache(cache_dir or default_cache_dir(), cache_max_bytes)
        self.downloaded: list[str] = []  # zip names fetched by this client, in order
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ArchiveClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the calls assets make ---------------------------------------------------------------

    def day(self, kind: str, symbol: str, day: date) -> pa.Table:
        """One UTC day of ``kind`` (aggTrades, trades, klines) as one table; ArchiveMissing
        when the archive lacks it."""
        return self.table(kind, symbol, Period.day(day))

    def month(self, kind: str, symbol: str, year: int, month: int) -> pa.Table:
        return self.table(kind, symbol, Period.month(year, month))

    def table(self, kind: str, symbol: str, period: Period) -> pa.Table:
        """The whole file, parsed and checked before it is returned (nothing partial)."""
        batches = list(self.batches(kind, symbol, period))
        return pa.concat_tables(batches) if batches else schema(kind).empty_table()

    def batches(
        self, kind: str, symbol: str, period: Period, checksum: str | None = None
    ) -> Iterator[pa.Table]:
        """Tables of about ``block_bytes`` of CSV each, for days too big to hold at once.
        The download is verified before the first is yielded; a bad row raises after the
        batches before it, so a caller writing as it goes must be able to undo."""
        with self.download(kind, symbol, period, checksum) as path:
            name = file_name(kind, symbol, period)
            member = member_name(name)
            try:
                archive = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise CorruptArchive(name, f"not a readable zip: {exc}") from None
            with archive:
                if member not in archive.namelist():
                    found = archive.namelist()[:5]
                    raise CorruptArchive(name, f"has no member {member!r} (has {found})")
                try:
                    yield from read_batches(
                        lambda: archive.open(member), kind, symbol, period, name, self.block_bytes
                    )
                except (zipfile.BadZipFile, EOFError, OSError) as exc:
                    raise CorruptArchive(name, f"cannot be unzipped: {exc}") from None

    def history(
        self, kind: str, symbol: str, first: date, last: date, today: date | None = None
    ) -> Iterator[Fetched]:
        """Every day first..last, in order. A day of a complete past month comes from the
        month file (verified and sliced once, then read from the cache: ``month_days``); while
        a month file is not published, and for the current month, from its day file."""
        today = today or datetime.now(UTC).date()
        day = first
        while day <= last:
            month = Period.month(day.year, day.month)
            if month.end > today:
                yield self._day_file(kind, symbol, day)
                day += timedelta(days=1)
                continue
            days = [d for d in month.days() if first <= d <= last]
            try:
                yield from self.month_days(kind, symbol, month, days)
            except ArchiveMissing:
                for one in days:
                    yield self._day_file(kind, symbol, one)
            day = month.end

    def month_days(
        self, kind: str, symbol: str, month: Period, days: list[date]
    ) -> Iterator[Fetched]:
        """``days`` of a month from its month file: the ``.CHECKSUM`` is fetched every time,
        the zip only when the cache has no entry with that checksum (then the whole month is
        verified, parsed and sliced by day before any day is yielded). A day without rows is
        yielded with ``table=None``, like a day file the archive does not have."""
        name = file_name(kind, symbol, month)
        checksum = self._checksum(kind, symbol, month)
        rows = self.months.days(kind, symbol, month, checksum)
        if rows is None:
            rows = self.months.fill(
                kind, symbol, month, checksum, self.batches(kind, symbol, month, checksum)
            )
        for day in days:
            table = self.months.read(kind, symbol, month, day) if rows.get(day) else None
            yield Fetched(Period.day(day), table, name)

    def _day_file(self, kind: str, symbol: str, day: date) -> Fetched:
        period = Period.day(day)
        try:
            return Fetched(period, self.day(kind, symbol, day), file_name(kind, symbol, period))
        except ArchiveMissing:
            return Fetched(period, None, file_name(kind, symbol, period))

    # -- transfer ----------------------------------------------------------------------------

    def _checksum(self, kind: str, symbol: str, period: Period) -> str:
        """The file's sha256 from its ``.CHECKSUM`` (ArchiveMissing when not published)."""
        path = archive_path(kind, symbol, period)
        name = file_name(kind, symbol, period)
        return parse_checksum(self._retrying(self._small, path + ".CHECKSUM"), name)

    @contextmanager
    def download(
        self, kind: str, symbol: str, period: Period, checksum: str | None = None
    ) -> Iterator[Path]:
        """The zip, verified against its ``.CHECKSUM`` (``checksum`` when already fetched), in
        a temporary file removed on exit."""
        path = archive_path(kind, symbol, period)
        name = file_name(kind, symbol, period)
        expected = checksum or self._checksum(kind, symbol, period)
        self.downloaded.append(name)
        with tempfile.TemporaryDirectory(prefix="binance-archive-", dir=self.temp_dir) as tmp:
            target = Path(tmp) / name
            digest = self._retrying(self._to_file, path, target)
            if digest != expected:
                raise ChecksumMismatch(
                    name, f"sha256 {digest} differs from its .CHECKSUM {expected}"
                )
            yield target

    def _retrying(self, fetch, path: str, *args):
        name = path.rsplit("/", 1)[-1]
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(
                multiplier=self.backoff_seconds,
                max=self.max_backoff_seconds,
                jitter=self.backoff_seconds,
            ),
            retry=retry_if_exception(lambda exc: isinstance(exc, _Transient)),
            reraise=True,
        )
        try:
            return retrying(self._attempt, fetch, path, name, *args)
        except _Transient as exc:
            raise exc.final from None

    def _attempt(self, fetch, path: str, name: str, *args):
        try:
            return fetch(path, name, *args)
        except requests.Timeout:
            raise _Transient(
                ArchiveUnavailable(
                    name, f"timed out ({self.timeout_seconds}s) in {self.attempts} attempts"
                )
            ) from None
        except requests.exceptions.ChunkedEncodingError as exc:
            raise _Transient(
                TruncatedDownload(name, f"the body ended early ({type(exc).__name__})")
            ) from None
        except requests.ConnectionError as exc:
            raise _Transient(
                ArchiveUnavailable(name, f"connection failed: {type(exc).__name__}")
            ) from None

    def _get(self, path: str, name: str) -> requests.Response:
        response = self.session.get(
            f"{self.base_url}/{path}", stream=True, timeout=self.timeout_seconds
        )
        if response.status_code == 200:
            return response
        response.close()
        if response.status_code == 404:
            raise ArchiveMissing(name)
        message = f"HTTP {response.status_code} in {self.attempts} attempts"
        if response.status_code >= 500 or response.status_code == 429:
            raise _Transient(ArchiveUnavailable(name, message))
        raise ArchiveError(name, f"HTTP {response.status_code}")

    def _small(self, path: str, name: str) -> bytes:
        with self._get(path, name) as response:
            body = response.raw.read(MAX_CHECKSUM_BYTES + 1, decode_content=True)
            if len(body) > MAX_CHECKSUM_BYTES:
                raise ArchiveError(name, f"larger than {MAX_CHECKSUM_BYTES} bytes")
            return body

    def _to_file(self, path: str, name: str, target: Path) -> str:
        """Stream the body to ``target``; its sha256. A body shorter than its Content-Length
        is a ``TruncatedDownload`` (retried)."""
        digest = hashlib.sha256()
        size = 0
        with self._get(path, name) as response, target.open("wb") as out:
            for chunk in response.iter_content(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) != size:
            raise _Transient(TruncatedDownload(name, f"got {size} of {declared} bytes"))
        return digest.hexdigest()


def default_cache_dir() -> Path:
    """Where month files are kept sliced by day: ``QUANT_HOME/cache/binance-archive``."""
    return quant_home() / "cache" / "binance-archive"


class BinanceArchiveResource(dg.ConfigurableResource):
    """The archive client as a Dagster resource; the base URL from ``BINANCE_ARCHIVE_URL``
    (default Binance's public archive) unless configured."""

    base_url: str | None = None
    timeout_seconds: float = 60.0
    attempts: int = 5
    cache_dir: str | None = None  # default QUANT_HOME/cache/binance-archive
    cache_max_bytes: int = DEFAULT_MAX_BYTES

    def client(self) -> ArchiveClient:
        return ArchiveClient(
            self.base_url,
            timeout_seconds=self.timeout_seconds,
            attempts=self.attempts,
            cache_dir=self.cache_dir,
            cache_max_bytes=self.cache_max_bytes,
        )
