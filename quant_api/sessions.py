"""Recorded live sessions: the manifests in the lake (``sessions/<id>/session.json``, written
last by the live pipeline, see docs/session-log.md) and what replay verification recorded about
them in the Dagster instance (the ``replay_verification`` asset, one partition per session, and
its checks ``chain_intact`` and ``bars_match_warehouse``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from quant_api.models import SessionDetail, SessionSummary, Verification
from quant_core.sessionlog.reader import MANIFEST
from quant_resources import settings

_log = logging.getLogger(__name__)
PREFIX = "sessions/"
ASSET = "replay_verification"
CHECKS = ("chain_intact", "bars_match_warehouse")
PAGE, HISTORY_LIMIT = 200, 20_000


def summary(session_id: str, doc: dict) -> SessionSummary:
    header = doc.get("header") or {}
    footer = doc.get("footer") or {}
    start_ns = header.get("start_ns")
    return SessionSummary(
        session_id=session_id,
        state=str(doc.get("state", "unknown")),
        venue=header.get("venue"),
        symbols=list(header.get("symbols") or []),
        streams=list(header.get("streams") or []),
        started_at=datetime.fromtimestamp(start_ns / 1e9, UTC) if start_ns else None,
        segments=len(doc.get("segments") or []),
        records=doc.get("records"),
        counts=dict(footer.get("counts") or {}),
        final_digest=doc.get("final_digest"),
        clean=footer.get("clean"),
    )


def list_sessions(lake) -> list[SessionSummary]:
    found = []
    for key in lake.list(PREFIX):
        session_id, _, name = key[len(PREFIX) :].partition("/")
        if name == MANIFEST:
            found.append(summary(session_id, orjson.loads(lake.read_bytes(key))))
    return found


def read_session(lake, session_id: str) -> SessionSummary | None:
    key = f"{PREFIX}{session_id}/{MANIFEST}"
    if not lake.exists(key):
        return None
    return summary(session_id, orjson.loads(lake.read_bytes(key)))


def _metadata_value(entry):
    return getattr(entry, "value", entry)


def _check_passed(instance, check_key, session_id: str) -> bool | None:
    """The newest result of one check on the session's partition (None: never ran). The
    history is newest first and shared by every session: read page by page, at most
    ``HISTORY_LIMIT`` executions back (years of sessions)."""
    cursor = None
    for _ in range(HISTORY_LIMIT // PAGE):
        page = instance.event_log_storage.get_asset_check_execution_history(
            check_key, limit=PAGE, cursor=cursor
        )
        for execution in page:
            if execution.partition == session_id:
                # SUCCEEDED: the check passed; FAILED: it ran and did not.
                return execution.status.value == "SUCCEEDED"
        if len(page) < PAGE:
            return None
        cursor = page[-1].id
    return None


def verification(session_id: str) -> Verification:
    """What the last replay_verification of the session recorded (DAGSTER_HOME's instance)."""
    if not settings.setting("DAGSTER_HOME"):
        return Verification(status="unknown", error="DAGSTER_HOME is not set")
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        key = dg.AssetKey(ASSET)
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[session_id]), limit=1
        ).records
        if not records:
            return Verification(status="not_verified")
        record = records[0]
        meta = {k: _metadata_value(v) for k, v in record.asset_materialization.metadata.items()}
        checks = {
            name: _check_passed(instance, dg.AssetCheckKey(key, name), session_id)
            for name in CHECKS
        }
    passed = all(checks.values()) and "error" not in meta
    return Verification(
        status="passed" if passed else "failed",
        chain_intact=checks["chain_intact"],
        bars_match_warehouse=checks["bars_match_warehouse"],
        final_digest=meta.get("final_digest"),
        trades=meta.get("trades"),
        bars=meta.get("bars"),
        error=meta.get("error"),
        verified_at=datetime.fromtimestamp(record.timestamp, UTC),
    )


def detail(lake, session_id: str) -> SessionDetail | None:
    found = read_session(lake, session_id)
    if found is None:
        return None
    return SessionDetail(**found.model_dump(), verification=verification(session_id))
