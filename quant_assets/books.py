"""Order books in Dagster (group ``live``): the ``live_book_snapshots`` asset the live ingestion
run reports each closed hour (snapshots, resyncs, time in sync in that hour), and its checks
over the most recent stored snapshots: none crossed, every one explained by the stored
updates, and top of book equal to the ``bookTicker`` wherever their update ids coincide."""

from __future__ import annotations

from collections import defaultdict

import dagster as dg

from quant_assets.quality_checks import check_table
from quant_core.book_audit import unexplained_snapshots
from quant_resources.warehouse import WarehouseResource

AUDITED_SNAPSHOTS = 10_000  # the most recent snapshots each check looks at

live_book_snapshots = dg.AssetSpec(
    "live_book_snapshots",
    group_name="live",
    kinds={"clickhouse"},
    description=(
        "Top-of-book snapshots of the Binance order books the live run keeps in sync with depth "
        "diffs and REST snapshots (ClickHouse `book_snapshots`, with `book_updates` and "
        "`book_resyncs`); written only while a book is in sync."
    ),
    deps=["clickhouse_schema"],
)


class BookReport:
    """Materialisations of ``live_book_snapshots``: what changed since the previous report
    (a closed hour, or the stop)."""

    def __init__(self) -> None:
        self.last = {"snapshots": 0, "resyncs": 0, "in_sync_s": 0.0, "updates": 0}

    def __call__(self, context, summary, scope: str) -> None:
        books = summary.books
        if not books:
            return
        delta = {k: books.get(k, 0) - v for k, v in self.last.items()}
        self.last = {k: books.get(k, 0) for k in self.last}
        context.log_event(
            dg.AssetMaterialization(
                "live_book_snapshots",
                metadata={
                    "session_id": summary.session_id,
                    "scope": scope,
                    "snapshots": delta["snapshots"],
                    "resyncs": delta["resyncs"],
                    "time_in_sync_s": round(delta["in_sync_s"], 3),
                    "level_changes": delta["updates"],
                    "faults_in_session": dg.MetadataValue.json(books.get("faults", {})),
                },
            )
        )


def _findings(columns: list[str], rows: list[dict]) -> dg.MetadataValue:
    # A table, drawn in place on the check's page (markdown would hide behind a link).
    if not rows:
        return dg.MetadataValue.text("none")
    return check_table([{c: r[c] for c in columns} for r in rows])


def _recent(where: str = "") -> str:
    return (
        "SELECT symbol, ts_event, update_id, synced_from, bid_prices, ask_prices, bid_qtys, "
        f"ask_qtys FROM book_snapshots FINAL WHERE source = 'binance' {where} "
        f"ORDER BY ts_event DESC LIMIT {AUDITED_SNAPSHOTS}"
    )


@dg.asset_check(
    asset="live_book_snapshots",
    description=(
        "No stored book snapshot is crossed or locked (best bid at or above best ask): a book "
        "that crossed is a fault that resyncs it, never a snapshot."
    ),
)
def book_snapshots_not_crossed(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    rows = warehouse.query_rows(
        "SELECT symbol, ts_event, update_id, bid_prices[1], ask_prices[1] FROM "
        f"({_recent()}) WHERE length(bid_prices) > 0 AND length(ask_prices) > 0 "
        "AND bid_prices[1] >= ask_prices[1] ORDER BY symbol, ts_event"
    )
    checked = warehouse.scalar(f"SELECT count() FROM ({_recent()})")
    found = [
        {"symbol": s, "ts_event": str(ts), "update_id": u, "best_bid": b, "best_ask": a}
        for s, ts, u, b, a in rows
    ]
    columns = ["symbol", "ts_event", "update_id", "best_bid", "best_ask"]
    return dg.AssetCheckResult(
        passed=not found,
        metadata={
            "snapshots_checked": int(checked),
            "crossed": len(found),
            "findings": _findings(columns, found),
        },
    )


@dg.asset_check(
    asset="live_book_snapshots",
    description=(
        "Every stored snapshot is explained by the stored `book_updates`: from the REST "
        "snapshot it was built from (`synced_from`) the stored diffs chain without a hole "
        "(each `U` is the previous `u + 1`) up to its `update_id`."
    ),
)
def book_snapshots_explained_by_updates(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    snaps = warehouse.query_rows(
        f"SELECT symbol, ts_event, update_id, synced_from FROM ({_recent()})"
    )
    diffs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    if snaps:
        lo = min(int(s[3]) for s in snaps)
        hi = max(int(s[2]) for s in snaps)
        for symbol, first, last in warehouse.query_rows(
            "SELECT DISTINCT symbol, first_update_id, last_update_id FROM book_updates "
            "WHERE source = 'binance' AND symbol IN {s:Array(String)} "
            "AND last_update_id > {lo:UInt64} AND last_update_id <= {hi:UInt64} "
            "ORDER BY symbol, last_update_id, first_update_id",
            {"s": sorted({s[0] for s in snaps}), "lo": lo, "hi": hi},
        ):
            diffs[symbol].append((int(first), int(last)))
    found = unexplained_snapshots(diffs, [(s, ts, int(u), int(f)) for s, ts, u, f in snaps])
    columns = ["symbol", "ts_event", "update_id", "why"]
    return dg.AssetCheckResult(
        passed=not found,
        metadata={
            "snapshots_checked": len(snaps),
            "unexplained": len(found),
            "findings": _findings(columns, found),
        },
    )


@dg.asset_check(
    asset="live_book_snapshots",
    description=(
        "Where a snapshot's `update_id` equals a stored `bookTicker`'s update id (the same "
        "moment of the exchange's book), its best bid and ask (price and quantity) are the "
        "book ticker's."
    ),
)
def book_top_agrees_with_book_ticker(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    rows = warehouse.query_rows(
        "SELECT s.symbol, s.ts_event, s.update_id, s.bid_prices[1], s.bid_qtys[1], "
        "s.ask_prices[1], s.ask_qtys[1], q.bid_price, q.bid_qty, q.ask_price, q.ask_qty "
        f"FROM ({_recent()}) AS s INNER JOIN (SELECT DISTINCT symbol, update_id, bid_price, "
        "bid_qty, ask_price, ask_qty FROM quotes WHERE source = 'binance') AS q "
        "ON s.symbol = q.symbol AND s.update_id = q.update_id "
        "WHERE length(s.bid_prices) > 0 AND length(s.ask_prices) > 0"
    )
    found = []
    for symbol, ts, u, bp, bq, ap, aq, qbp, qbq, qap, qaq in rows:
        if (bp, bq, ap, aq) != (qbp, qbq, qap, qaq):
            found.append(
                {
                    "symbol": symbol,
                    "ts_event": str(ts),
                    "update_id": u,
                    "book": f"{bq} @ {bp} / {aq} @ {ap}",
                    "book_ticker": f"{qbq} @ {qbp} / {qaq} @ {qap}",
                }
            )
    columns = ["symbol", "ts_event", "update_id", "book", "book_ticker"]
    return dg.AssetCheckResult(
        passed=not found,
        metadata={
            "coinciding_update_ids": len(rows),
            "disagreeing": len(found),
            "findings": _findings(columns, found),
        },
    )


book_checks = [
    book_snapshots_not_crossed,
    book_snapshots_explained_by_updates,
    book_top_agrees_with_book_ticker,
]
