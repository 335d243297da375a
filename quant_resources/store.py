"""``HistoricalStore``: the one write path of historical data, ClickHouse and the lake together.

A replacement of a slice (one table, one source, some session days) is staged first (in
pieces, while the caller still fetches), then published under a lock:

1. **Lock** ``(table, source)`` in ClickHouse (warehouse_lock.py). Held only while publishing,
   not while fetching, so overlapping runs fetch in parallel and publish one after the other.
   One lock per (table, source), not per day: ClickHouse runs a table's mutations one at a
   time anyway, so per-day locks would buy no parallelism but cost a DDL per day; and holding
   the whole (table, source) is what makes repairing any day's left-over publication safe.
2. **Repair** publications of that table and source left unfinished (``slice_publications``):
   ``staged`` -> the version's rows, if any landed, are deleted (the previous version was never
   touched); ``clickhouse`` -> older versions are deleted and the day's lake file is rewritten
   from ClickHouse's rows of that version. Each repair is logged and reported.
3. **Refuse incomplete answers**: a day without rows, or a symbol that has stored rows for a
   day but none in the new answer, is refused (nothing is written), unless the caller allows
   that day or symbol explicitly (``allow_empty_days``, ``allow_missing_symbols``); an allowed
   gap is logged as a warning and reported.
4. **Publish** in a fixed order, recording each state: ``staged`` -> move the stage into the
   table as one part with a version newer than any stored (``clickhouse``) -> delete the
   slice's *older* versions -> publish the lake files, encoded and uploaded under hidden
   names meanwhile (``complete``). A day that one piece holds was encoded already while
   ClickHouse took that piece.

Why concurrent replacements cannot lose data: a writer deletes only versions older than its
own, and only after its own version is completely in the table; so at any moment the slice
holds at least one complete version. The lock makes the end state exactly one version: the
second writer publishes after the first and deletes the first's (older) version. Should a
lock be broken while its holder still works (lease expired), the holder's ``verify`` before
deleting fails (run fails, state ``clickhouse``), and even if both delete, neither deletes
the newer version: at worst two versions remain, resolved by ``FINAL`` and by the next run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from quant_resources.lake import LakeResource, PreparedObject, encode_parquet
from quant_resources.publications import (
    CLICKHOUSE,
    COMPLETE,
    ROLLED_BACK,
    STAGED,
    SUPERSEDED,
    PublicationLedger,
    decode_params,
    encode_params,
)
from quant_resources.warehouse import StagedSlice, WarehouseResource, identifier
from quant_resources.warehouse_lock import WarehouseLock, lock_name

# More runs of rows per day than this: sort by day once instead of slicing runs.
MAX_DAY_RUNS = 4096


class Log(Protocol):
    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...


class StoreError(RuntimeError):
    """A replacement was refused or failed; ``metadata`` says what each store holds now."""

    def __init__(self, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.metadata = dict(metadata or {})


class IncompleteAnswerError(StoreError):
    """The new data would remove stored rows it does not replace: nothing was written."""


@dataclass(frozen=True)
class Slice:
    """What one replacement replaces. ``where`` (bound ``params``) selects the slice's rows in
    ``table`` for all ``days``; each day's rows go to the lake file ``dataset/source=S/
    date=D/part``, which is the only file of that folder when ``exclusive``."""

    table: str
    dataset: str
    source: str
    days: tuple[date, ...]
    where: str
    params: Mapping[str, Any]
    asked: tuple[str, ...] = ()  # the symbols requested, for messages
    part: str = "part.parquet"
    exclusive: bool = True
    order_by: tuple[str, ...] = ("symbol", "ts")
    bulk: bool = False  # millions of rows: staged as parts and handed over (warehouse.staging)

    def describe(self) -> str:
        span = f"{self.days[0]}" if len(self.days) == 1 else f"{self.days[0]}..{self.days[-1]}"
        return f"{self.table} of {self.source} {span}"

    def as_json(self, columns: list[str]) -> str:
        return json.dumps(
            {
                "where": self.where,
                "params": encode_params(self.params),
                "dataset": self.dataset,
                "part": self.part,
                "exclusive": self.exclusive,
                "order_by": list(self.order_by),
                "columns": columns,
            }
        )


@dataclass
class Publication:
    """What a replacement did, for the asset's metadata."""

    version: int = 0
    rows: int = 0
    files: int = 0
    repaired: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"version": self.version, "lake_files": self.files}
        if self.repaired:
            meta["repaired"] = dg.MetadataValue.json(self.repaired)
        if self.overrides:
            meta["overrides"] = dg.MetadataValue.json(self.overrides)
        return meta


class Replacement:
    """The new version being staged: ``add`` each piece (from any one thread at a time).
    Each piece's days are encoded to the lake's Parquet in ``encoder`` while ClickHouse
    takes the piece; a day only one piece holds publishes those bytes."""

    def __init__(self, stage: StagedSlice, encoder: ThreadPoolExecutor | None = None) -> None:
        self.stage = stage
        self.pieces: list[pa.Table] = []
        self.encoded: list[dict[date, Future[bytes]]] = []  # per piece, its days' Parquet
        self.publication = Publication()
        self._encoder = encoder
        self._lock = threading.Lock()

    def add(self, piece: pa.Table) -> int:
        early = {}
        if self._encoder is not None and piece.num_rows:
            early = {
                day: self._encoder.submit(encode_parquet, rows)
                for day, rows in split_by_day(piece).items()
            }
        added = self.stage.add(piece)
        with self._lock:
            self.pieces.append(piece)
            self.encoded.append(early)
        return added

    def parquet(self, day: date) -> Future[bytes] | None:
        """The encoded day when exactly one piece holds it (then its rows are the day's)."""
        holders = [e[day] for e in self.encoded if day in e]
        return holders[0] if len(holders) == 1 else None


def split_by_day(table: pa.Table) -> dict[date, pa.Table]:
    """Rows per session date, each day keeping the table's row order. A provider's frame is
    ordered by symbol, then time, so a day is a few runs of rows: those are sliced without a
    copy. A frame in any other order (many short runs) is sorted once by day instead."""
    if table.num_rows == 0:
        return {}
    days = pc.cast(table.column("session_date"), pa.int32()).to_numpy()
    epoch = date(1970, 1, 1)
    edges = np.flatnonzero(days[1:] != days[:-1]) + 1
    if edges.size > MAX_DAY_RUNS:
        order = np.argsort(days, kind="stable")
        table, days = table.take(order), days[order]
        edges = np.flatnonzero(days[1:] != days[:-1]) + 1
    runs: dict[int, list[pa.Table]] = {}
    for start, end in zip(np.r_[0, edges], np.r_[edges, days.size], strict=True):
        if end > start:
            runs.setdefault(int(days[start]), []).append(table.slice(start, end - start))
    return {
        epoch + timedelta(days=day): pa.concat_tables(parts) for day, parts in sorted(runs.items())
    }


def _discard(prepared: Iterable[Any]) -> None:
    """Drop prepared lake objects (``PreparedObject``s or futures of them) never published;
    one that failed to prepare has nothing to drop."""
    for item in prepared:
        with contextlib.suppress(Exception):
            (item.result() if hasattr(item, "result") else item).discard()


def _symbols(table: pa.Table) -> set[str]:
    return set(pc.unique(table.column("symbol")).to_pylist()) if table.num_rows else set()


class HistoricalStore(dg.ConfigurableResource):
    """Historical slices in ClickHouse and the Parquet lake, replaced together (module doc)."""

    warehouse: WarehouseResource
    lake: LakeResource
    lock_wait_seconds: float = Field(
        default=600.0, ge=0, description="How long a publication waits for another one."
    )
    lock_lease_seconds: float = Field(
        default=1800.0, gt=0, description="After this, a lock may be broken (holder crashed)."
    )

    @contextlib.contextmanager
    def replacement(
        self,
        target: Slice,
        *,
        holder: str,
        log: Log | None = None,
        allow_empty_days: Iterable[date] = (),
        allow_missing_symbols: Iterable[str] = (),
    ) -> Iterator[Replacement]:
        """Stage the pieces ``add``-ed inside the block; publish them when it ends without
        error. ``replacement.publication`` then says what was done."""
        log = log or logging.getLogger(__name__)
        table = identifier(target.table)
        with (
            self.warehouse.staging(table, bulk=target.bulk) as stage,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-encode") as encoder,
        ):
            replacement = Replacement(stage, encoder)
            try:
                yield replacement
            except BaseException:
                for early in replacement.encoded:
                    for future in early.values():
                        future.cancel()
                raise
            self._publish(
                target,
                replacement,
                holder=holder,
                log=log,
                allow_empty_days=set(allow_empty_days),
                allow_missing_symbols={s.upper() for s in allow_missing_symbols},
            )

    def replace(self, target: Slice, data: pa.Table, **kwargs: Any) -> Publication:
        """``replacement`` with all the data in one piece."""
        with self.replacement(target, **kwargs) as replacement:
            replacement.add(data)
        return replacement.publication

    # -- publishing -------------------------------------------------------------------------
    def _publish(
        self,
        target: Slice,
        replacement: Replacement,
        *,
        holder: str,
        log: Log,
        allow_empty_days: set[date],
        allow_missing_symbols: set[str],
    ) -> None:
        data = pa.concat_tables(replacement.pieces) if replacement.pieces else None
        by_day = split_by_day(data) if data is not None else {}
        columns = data.column_names if data is not None else []
        ledger = PublicationLedger(self.warehouse, target.table, target.source)
        lock = WarehouseLock(
            self.warehouse,
            lock_name(target.table, target.source),
            holder=holder,
            wait_seconds=self.lock_wait_seconds,
            lease_seconds=self.lock_lease_seconds,
            log=log.warning,
        )
        result = replacement.publication
        with lock.hold():
            result.repaired = self._repair(ledger, data.schema if data is not None else None, log)
            newest, result.overrides = self._check_complete(
                target, by_day, allow_empty_days, allow_missing_symbols, log
            )
            version = max(replacement.stage.version, newest + 1)
            rows = {day: by_day[day].num_rows if day in by_day else 0 for day in target.days}
            state = dict(holder=holder, slice_json=target.as_json(columns))
            ledger.record(version, STAGED, rows, **state)
            where = target.describe()
            with ThreadPoolExecutor(max_workers=2) as pool:
                # Encoded and uploaded under hidden names while ClickHouse moves the rows;
                # published (a rename, a server-side copy) only after ClickHouse has them.
                prepared = {
                    day: pool.submit(self._prepare, target, day, table, replacement.parquet(day))
                    for day, table in by_day.items()
                }
                try:
                    self.warehouse.move(replacement.stage, version)
                except Exception as exc:
                    _discard(prepared.values())
                    # The state is recorded already; the error text is a best effort (the
                    # warehouse may be what failed) and must not hide the original error.
                    with contextlib.suppress(Exception):
                        ledger.record(version, STAGED, rows, error=str(exc), **state)
                    raise StoreError(
                        f"{where}: ClickHouse failed to take version {version} ({exc}); "
                        "nothing was published, ClickHouse and the lake hold the previous "
                        "version (recorded in slice_publications as staged)",
                        {"state": STAGED, "version": version},
                    ) from exc
                ledger.record(version, CLICKHOUSE, rows, **state)
                try:
                    lock.verify()
                    self.warehouse.delete_older(target.table, target.where, target.params, version)
                    files = {day: f.result() for day, f in prepared.items()}
                    result.files = self._write_lake(target, files)
                except Exception as exc:
                    _discard(prepared.values())
                    # The state is recorded already; the error text is a best effort (the
                    # warehouse may be what failed) and must not hide the original error.
                    with contextlib.suppress(Exception):
                        ledger.record(version, CLICKHOUSE, rows, error=str(exc), **state)
                    raise StoreError(
                        f"{where}: ClickHouse holds the new version {version} but the lake "
                        f"was not updated ({exc}). Recorded in slice_publications as "
                        f"'clickhouse'; the next replacement of {target.table} for "
                        f"{target.source} rewrites those lake files from ClickHouse",
                        {"state": CLICKHOUSE, "version": version},
                    ) from exc
            ledger.record(version, COMPLETE, rows, **state)
        result.version = version
        result.rows = sum(rows.values())

    def _check_complete(
        self,
        target: Slice,
        by_day: Mapping[date, pa.Table],
        allow_empty_days: set[date],
        allow_missing_symbols: set[str],
        log: Log,
    ) -> tuple[int, list[str]]:
        """Refuse an answer that would delete stored rows it does not replace; returns the
        newest stored version of the slice and the overrides used."""
        stored: dict[date, set[str]] = {}
        newest = 0
        for day, symbols, top in self.warehouse.query_rows(
            f"SELECT session_date, groupUniqArray(symbol), max(version) "
            f"FROM {identifier(target.table)} WHERE ({target.where}) GROUP BY session_date",
            target.params,
        ):
            stored[day] = set(symbols)
            newest = max(newest, int(top))
        asked = ", ".join(target.asked[:10]) or "(any)"
        if len(target.asked) > 10:
            asked += f", ... ({len(target.asked)} in all)"
        overrides: list[str] = []
        for day in target.days:
            if day not in by_day:
                if day not in allow_empty_days:
                    raise IncompleteAnswerError(
                        f"{target.source} answered nothing for {target.table} on {day} "
                        f"(symbols asked: {asked}), a trading session: refusing to replace "
                        f"the day with nothing ({len(stored.get(day, ()))} symbols stored, "
                        f"kept). If the day is really empty, allow it with "
                        f"allow_empty_days: ['{day}']",
                        {"day": day.isoformat(), "symbols_asked": asked},
                    )
                overrides.append(f"{day}: empty answer allowed (allow_empty_days)")
                continue
            missing = stored.get(day, set()) - _symbols(by_day[day])
            refused = sorted(missing - allow_missing_symbols)
            if refused:
                raise IncompleteAnswerError(
                    f"{target.source} answered no {target.table} rows for {', '.join(refused)} "
                    f"on {day}, which are stored for that day: refusing to delete them "
                    f"(symbols asked: {asked}). If they are really gone (delisted), allow "
                    f"it with allow_missing_symbols: {refused}",
                    {"day": day.isoformat(), "missing_symbols": refused},
                )
            if missing:
                overrides.append(
                    f"{day}: stored symbols {', '.join(sorted(missing))} removed "
                    "(allow_missing_symbols)"
                )
        for note in overrides:
            log.warning(f"{target.describe()}: {note}")
        return newest, overrides

    def _prepare(
        self, target: Slice, day: date, table: pa.Table, encoded: Future[bytes] | None = None
    ) -> PreparedObject:
        key = self.lake.key(target.dataset, target.source, day, part=target.part)
        data = encoded.result() if encoded is not None else encode_parquet(table)
        return self.lake.prepare_bytes(key, data)

    def _write_lake(self, target: Slice, prepared: Mapping[date, PreparedObject]) -> int:
        """Publish each day's prepared file, then remove whatever else is in a day's folder
        of an exclusive slice (files of an earlier layout, or the day's file when the day
        became empty by override)."""

        def write(day: date) -> None:
            key = self.lake.key(target.dataset, target.source, day, part=target.part)
            if day in prepared:
                prepared[day].commit()
            prefix = f"{target.dataset}/source={target.source}/date={day.isoformat()}/"
            existing = set(self.lake.list(prefix)) if target.exclusive else {key}
            for stale in existing - ({key} if day in prepared else set()):
                self.lake.delete_prefix(stale)

        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(write, target.days))
        return sum(day in prepared for day in target.days)

    # -- repair -----------------------------------------------------------------------------
    def _repair(self, ledger: PublicationLedger, schema: pa.Schema | None, log: Log) -> list[str]:
        """Finish or undo what earlier replacements of this table and source left unfinished
        (the caller holds the lock, so none of them is still running)."""
        done: list[str] = []
        by_version: dict[int, list] = {}
        for pending in ledger.pending():
            by_version.setdefault(pending.version, []).append(pending)
        for version, days in sorted(by_version.items()):
            first = days[0]
            rows = {p.day: p.rows for p in days}
            state = dict(holder="repair", slice_json=json.dumps(first.slice))
            what = f"{ledger.table} of {ledger.source} version {version} ({len(days)} days)"
            if first.state == STAGED:
                self.warehouse.delete_version(ledger.table, version)
                ledger.record(version, ROLLED_BACK, rows, **state)
                note = f"{what}: left staged ({first.error or 'run died'}); its rows removed"
            else:
                note = self._finish(ledger, version, days, schema, state, what)
            log.warning(f"repaired {note}")
            done.append(note)
        return done

    def _finish(
        self,
        ledger: PublicationLedger,
        version: int,
        days: list,
        schema: pa.Schema | None,
        state: dict[str, str],
        what: str,
    ) -> str:
        """A version ClickHouse holds but the lake may not: delete older versions, rewrite
        each day's lake file from ClickHouse (unless a newer version was published since)."""
        spec = days[0].slice
        rows = {p.day: p.rows for p in days}
        newer = [p.day for p in days if ledger.newest_published(p.day, spec["part"]) > version]
        current = [p.day for p in days if p.day not in newer]
        params = decode_params(spec["params"])
        self.warehouse.delete_older(ledger.table, spec["where"], params, version)
        target = Slice(
            table=ledger.table,
            dataset=spec["dataset"],
            source=ledger.source,
            days=tuple(current),
            where=spec["where"],
            params=params,
            part=spec["part"],
            exclusive=spec["exclusive"],
            order_by=tuple(spec["order_by"]),
        )
        prepared: dict[date, PreparedObject] = {}
        for day in current:
            table = self._version_rows(target, spec["columns"], day, version, schema)
            if table.num_rows:
                prepared[day] = self._prepare(target, day, table)
        try:
            self._write_lake(target, prepared)
        except BaseException:
            _discard(prepared.values())
            raise
        if current:
            ledger.record(version, COMPLETE, {d: rows[d] for d in current}, **state)
        if newer:
            ledger.record(version, SUPERSEDED, {d: rows[d] for d in newer}, **state)
        return (
            f"{what}: ClickHouse had it, the lake did not; rewrote {len(prepared)} lake files "
            f"from ClickHouse" + (f", {len(newer)} days superseded" if newer else "")
        )

    def _version_rows(
        self, target: Slice, columns: list[str], day: date, version: int, schema: pa.Schema | None
    ) -> pa.Table:
        names = ", ".join(map(identifier, columns)) or "*"
        order = ", ".join(map(identifier, target.order_by))
        table = self.warehouse.query_arrow(
            f"SELECT {names} FROM {identifier(target.table)} WHERE source = {{s:String}} "
            f"AND session_date = {{d:Date}} AND version = {{v:UInt64}} ORDER BY {order}",
            {"s": target.source, "d": day, "v": version},
        )
        if schema is not None and schema.names == table.column_names:
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
                table = table.cast(schema)
        return table
