"""Faults of the archive simulator, by file: deterministic, so each test asks for exactly one.

Spec: comma-separated ``kind:PATTERN[:argument]``; PATTERN is an fnmatch pattern over the
zip's name without ``.zip`` (``BTCUSDT-aggTrades-2024-08-09``, ``*-trades-*``).

* ``missing``    404 for the zip and its ``.CHECKSUM`` (not published / no trading that day)
* ``corrupt``    zip bytes damaged; the ``.CHECKSUM`` is of the damaged bytes (unzip fails)
* ``checksum``   a row of the CSV changed after the ``.CHECKSUM`` was computed
* ``badrow``     the third line's price is 'abc' (the checksum matches: the parser must say)
* ``columns``    the third line lacks its last field
* ``outside``    the third line's time is a day later (outside the file's day)
* ``zeroprice``  the third line's price is 0
* ``truncate``   the zip's body stops halfway though its Content-Length promises all of it
* ``slow:P:S``   every answer for the file waits S seconds (default 2) first
* ``5xx:P:N``    the first N requests for the zip answer 503 (default 2), then it is served
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

KINDS = (
    "missing",
    "corrupt",
    "checksum",
    "badrow",
    "columns",
    "outside",
    "zeroprice",
    "truncate",
    "slow",
    "5xx",
)


class FaultSpecError(ValueError):
    """An unreadable --faults spec; the message names the offending item."""


@dataclass(frozen=True)
class Fault:
    kind: str
    pattern: str
    argument: float | None = None

    def matches(self, stem: str) -> bool:
        return fnmatch.fnmatchcase(stem, self.pattern)


def parse(spec: str) -> list[Fault]:
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, rest = item.partition(":")
        pattern, _, arg = rest.partition(":")
        if kind not in KINDS or not pattern:
            raise FaultSpecError(
                f"fault {item!r}: expected KIND:PATTERN[:ARG] with KIND one of {', '.join(KINDS)}"
            )
        try:
            argument = float(arg) if arg else None
        except ValueError:
            raise FaultSpecError(f"fault {item!r}: argument {arg!r} is not a number") from None
        if argument is not None and not 0 <= argument <= 3600:
            raise FaultSpecError(f"fault {item!r}: argument must be within [0, 3600]")
        faults.append(Fault(kind, pattern, argument))
    return faults
