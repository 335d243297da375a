"""Month files of Binance's archive, verified once and kept on disk sliced by UTC day.

A daily partition inside a complete past month reads its day from the month file (the archive
prefers those: one download per month instead of ~30). Downloading and parsing a month for one
day would repeat for each of its days, so the first partition to need a month parses all of
it and keeps every day as an Arrow IPC file here; the other days of that month then read only
their own file.

Layout under the cache folder (``QUANT_HOME/cache/binance-archive`` by default)::

    aggTrades/BTCUSDT/2024-11/2024-11-01.arrow ... + entry.json

``entry.json`` is written last and names the month file's sha256 (from its ``.CHECKSUM``): an
entry is used only when the archive's current checksum is the same (a re-published month is
fetched again), and a folder without it is an interrupted fill, never read. An entry is built
in a hidden folder beside it and renamed into place, so concurrent runs never see half of one.

Bound: after each fill, entries are evicted least recently used first (the mtime of
``entry.json``, touched on every use) until the cache holds at most ``max_bytes``; the entry
just filled is kept even when it alone is larger.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.formats.binance_archive import Period

ENTRY = "entry.json"
DAY_US = 86_400_000_000
DEFAULT_MAX_BYTES = 16 << 30
# lz4: a day of BTCUSDT aggTrades (~2M rows) is ~110 MB raw; lz4 decodes at memory speed.
_COMPRESSED = pa.ipc.IpcWriteOptions(compression="lz4")


def time_column(kind: str) -> str:
    return "open_time" if kind == "klines" else "ts_event"


class MonthCache:
    """Day slices of verified month files, bounded by ``max_bytes`` (module doc)."""

    def __init__(self, root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    def folder(self, kind: str, symbol: str, month: Period) -> Path:
        return self.root / kind / symbol / month.label

    def days(self, kind: str, symbol: str, month: Period, checksum: str) -> dict[date, int] | None:
        """Rows per day of the cached month (days without rows left out), or None when the
        cache has no complete entry of the file with this checksum."""
        entry = self.folder(kind, symbol, month) / ENTRY
        try:
            found = json.loads(entry.read_text())
        except (OSError, ValueError):
            return None
        if found.get("sha256") != checksum:
            return None
        with contextlib.suppress(OSError):
            os.utime(entry)  # recently used: evicted last
        return {date.fromisoformat(d): int(n) for d, n in found["rows"].items()}

    def read(self, kind: str, symbol: str, month: Period, day: date) -> pa.Table:
        path = self.folder(kind, symbol, month) / f"{day.isoformat()}.arrow"
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()

    def fill(
        self, kind: str, symbol: str, month: Period, checksum: str, batches: Iterable[pa.Table]
    ) -> dict[date, int]:
        """Write the month's parsed ``batches`` (file order) as one file per day; nothing is
        kept when they raise. Returns rows per day."""
        target = self.folder(kind, symbol, month)
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{month.label}-", dir=target.parent))
        try:
            rows = _write_days(building, batches, time_column(kind))
            (building / ENTRY).write_text(
                json.dumps(
                    {"sha256": checksum, "rows": {d.isoformat(): n for d, n in rows.items()}}
                )
            )
            old = None
            if target.exists():  # another checksum (re-published), or another run's fill
                old = target.with_name(f".{month.label}-old-{time.time_ns()}")
                with contextlib.suppress(OSError):
                    target.rename(old)
            # A concurrent run may have put its (identical) entry there first: keep that one.
            with contextlib.suppress(OSError):
                building.rename(target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(building, ignore_errors=True)
        self.evict(keep=target)
        return rows

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until at most ``max_bytes`` remain."""
        entries = []
        for entry in self.root.glob(f"*/*/*/{ENTRY}"):
            folder = entry.parent
            try:
                size = sum(f.stat().st_size for f in folder.iterdir())
                entries.append((entry.stat().st_mtime, folder, size))
            except OSError:
                continue  # removed meanwhile
        total = sum(size for _, _, size in entries)
        removed = []
        for _, folder, size in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if keep is not None and folder == keep:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed.append(folder)
        return removed


def _write_days(folder: Path, batches: Iterable[pa.Table], column: str) -> dict[date, int]:
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    rows: dict[int, int] = {}
    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            day = pc.cast(batch[column], pa.int64()).to_numpy() // DAY_US
            edges = np.flatnonzero(day[1:] != day[:-1]) + 1
            for start, end in zip(np.r_[0, edges], np.r_[edges, day.size], strict=True):
                key = int(day[start])
                if key not in writers:
                    name = date.fromordinal(date(1970, 1, 1).toordinal() + key).isoformat()
                    path = str(folder / f"{name}.arrow")
                    writers[key] = pa.ipc.new_file(path, batch.schema, options=_COMPRESSED)
                    rows[key] = 0
                writers[key].write_table(batch.slice(start, end - start))
                rows[key] += int(end - start)
    finally:
        for writer in writers.values():
            writer.close()
    epoch = date(1970, 1, 1).toordinal()
    return {date.fromordinal(epoch + k): n for k, n in sorted(rows.items())}
