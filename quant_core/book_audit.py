"""Audits of stored order books (no I/O): is every snapshot explained by the stored updates?

A snapshot built from the REST answer ``synced_from`` and standing at ``update_id`` is explained
when the stored diffs of its symbol chain from the REST answer to it without a hole: the first
one covers ``synced_from + 1`` (Binance's rule ``U <= lastUpdateId + 1 <= u``), each next one
starts right after the previous (``U == previous u + 1``) and the last ends at ``update_id``.
A snapshot at the REST answer itself (``update_id == synced_from``) needs no diff.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence


def unexplained(diffs: Sequence[tuple[int, int]], synced_from: int, update_id: int) -> str | None:
    """Why the diffs (``(U, u)``, sorted by ``u``, distinct) do not lead from the REST answer
    ``synced_from`` to ``update_id``, or None when they do."""
    if update_id == synced_from:
        return None
    if update_id < synced_from:
        return f"update_id {update_id} is before synced_from {synced_from}"
    lasts = [u for _, u in diffs]
    i = bisect_right(lasts, synced_from)
    expected = None
    while i < len(diffs) and diffs[i][1] <= update_id:
        first, last = diffs[i]
        if expected is None and first > synced_from + 1:
            return f"the first stored diff after {synced_from} starts at {first}"
        if expected is not None and first != expected:
            return f"no stored diff covers {expected}..{first - 1}"
        expected = last + 1
        i += 1
    if expected is None:
        return f"no stored diff after {synced_from}"
    if expected - 1 != update_id:
        return f"the stored diffs end at {expected - 1}, not at {update_id}"
    return None


def unexplained_snapshots(
    diffs: dict[str, Sequence[tuple[int, int]]],
    snapshots: Iterable[tuple[str, object, int, int]],
) -> list[dict]:
    """Findings for the snapshots ``(symbol, ts_event, update_id, synced_from)`` that the
    stored diffs per symbol do not explain."""
    findings = []
    for symbol, ts, update_id, synced_from in snapshots:
        why = unexplained(diffs.get(symbol, ()), synced_from, update_id)
        if why is not None:
            findings.append(
                {"symbol": symbol, "ts_event": str(ts), "update_id": update_id, "why": why}
            )
    return findings
