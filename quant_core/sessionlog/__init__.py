"""Session logs: the write-ahead record of everything a live session received (format v1).

``format`` encodes and decodes bytes, ``reader`` verifies and iterates files; the writer is an
I/O edge and lives in ``quant_resources.session_writer``. Spec: docs/session-log.md.
"""

from __future__ import annotations

from quant_core.sessionlog.format import FORMAT_VERSION, Footer, Record, RecordKind, SegmentHeader
from quant_core.sessionlog.reader import SessionInfo, SessionLogError, SessionReader

__all__ = [
    "FORMAT_VERSION",
    "Footer",
    "Record",
    "RecordKind",
    "SegmentHeader",
    "SessionInfo",
    "SessionLogError",
    "SessionReader",
]
