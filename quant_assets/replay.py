"""Replay verification in Dagster (group ``replay``): one partition per recorded session.

A partition downloads the session's files from the lake (``sessions/<id>/``), verifies the hash
chain, replays it through the same ingest kernel as live and compares the bars and (for a
session with depth) the book snapshots with ClickHouse, by the same comparison as
``quant replay verify --against-warehouse``. The checks block: a broken chain, a differing bar or
a differing book snapshot is a red check in the UI.
"""

import tempfile
from pathlib import Path

import dagster as dg

from quant_core.replay import replay
from quant_core.sessionlog.reader import SessionLogError
from quant_resources.lake import LakeResource
from quant_resources.replay_check import compare_with_warehouse
from quant_resources.warehouse import WarehouseResource

replay_sessions = dg.DynamicPartitionsDefinition(name="replay_sessions")
SESSIONS_PREFIX = "sessions/"


def download_session(lake: LakeResource, session_id: str, into: Path) -> Path:
    target = into / session_id
    target.mkdir(parents=True)
    keys = lake.list(f"{SESSIONS_PREFIX}{session_id}/")
    if not keys:
        raise dg.Failure(f"session {session_id} has no files under {SESSIONS_PREFIX} in the lake")
    for key in keys:
        (target / key.rsplit("/", 1)[1]).write_bytes(lake.read_bytes(key))
    return target


@dg.asset(
    group_name="replay",
    partitions_def=replay_sessions,
    deps=["live_bars_1m"],
    kinds={"python"},
    check_specs=[
        dg.AssetCheckSpec(
            "chain_intact",
            asset="replay_verification",
            blocking=True,
            description="The session log's hash chain verifies from the first segment to the "
            "last (nothing altered, dropped or reordered).",
        ),
        dg.AssetCheckSpec(
            "bars_match_warehouse",
            asset="replay_verification",
            blocking=True,
            description="The bars rebuilt by replaying the session equal the bars ClickHouse "
            "holds for it (the first difference is shown otherwise).",
        ),
        dg.AssetCheckSpec(
            "book_snapshots_match_warehouse",
            asset="replay_verification",
            blocking=True,
            description="The order-book snapshots rebuilt by replaying a session with depth "
            "equal the `book_snapshots` ClickHouse holds for it (levels, update ids, "
            "synced_from, completeness), and its level changes the `book_updates` (every "
            "column, the receive time `ts_init` included); the first difference is shown "
            "otherwise. A session without depth passes with nothing to compare.",
        ),
    ],
    description="Deterministic replay of a recorded live session, checked against ClickHouse.",
)
def replay_verification(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    session_id = context.partition_key
    with tempfile.TemporaryDirectory() as tmp:
        session_dir = download_session(lake, session_id, Path(tmp))
        try:
            result = replay(session_dir)
        except SessionLogError as exc:
            context.log.error(f"session {session_id} failed verification: {exc}")
            return dg.MaterializeResult(
                metadata={"session_id": session_id, "error": str(exc)},
                check_results=[
                    dg.AssetCheckResult(
                        check_name="chain_intact", passed=False, metadata={"error": str(exc)}
                    ),
                    *(
                        dg.AssetCheckResult(
                            check_name=name,
                            passed=False,
                            metadata={"error": "not compared: the session log did not verify"},
                        )
                        for name in ("bars_match_warehouse", "book_snapshots_match_warehouse")
                    ),
                ],
            )
    diff = compare_with_warehouse(warehouse, result)
    summary, timing = result.summary, result.timing
    snapshots = summary.get("books", {}).get("snapshots", 0)
    context.log.info(
        f"session {session_id}: {summary['trades']} trades, {summary['bars']} bars, "
        f"{snapshots} book snapshots, {timing['events_per_s']:,.0f} events/s; warehouse: "
        f"{'; '.join(diff.problems()) or 'identical'}"
    )
    return dg.MaterializeResult(
        metadata={
            "session_id": session_id,
            "final_digest": summary["final_digest"],
            "records": dg.MetadataValue.json(summary["records"]),
            "events": dg.MetadataValue.json(summary["events"]),
            "span_s": round(summary["span_s"], 3),
            "trades": summary["trades"],
            "bars": summary["bars"],
            "book_snapshots": snapshots,
            "replay_events_per_s": round(timing["events_per_s"]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="chain_intact",
                passed=True,
                metadata={"final_digest": summary["final_digest"], "segments": summary["segments"]},
            ),
            dg.AssetCheckResult(
                check_name="bars_match_warehouse",
                passed=diff.bars is None,
                metadata={"bars": summary["bars"], "first_difference": diff.bars or "none"},
            ),
            dg.AssetCheckResult(
                check_name="book_snapshots_match_warehouse",
                passed=diff.books is None and diff.book_updates is None,
                metadata={
                    "book_snapshots": snapshots,
                    "book_updates": summary.get("books", {}).get("updates", 0),
                    "first_difference": diff.books
                    or diff.book_updates
                    or ("none" if diff.has_books else "no depth in this session"),
                },
            ),
        ],
    )
