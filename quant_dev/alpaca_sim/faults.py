"""Fault injection for the simulator, deterministic for a seed and a request order.

Spec: comma-separated ``kind:probability[:argument]`` items, plus ``die_after_pages:N``.

* ``429:p[:seconds]`` rate limit with ``Retry-After`` (integer seconds, default 1);
  any other 4xx/5xx code (``500:p``, ``503:p``) answers that status with a JSON message.
* ``slow:p[:seconds]`` sleeps (default 1 s) before answering normally.
* ``truncate:p`` sends a cut JSON body with a matching ``Content-Length``.
* ``hangup:p`` promises the full ``Content-Length``, sends half and closes the connection.
* ``badrow:p`` corrupts one bar of a bars page (high < low, negative volume or NaN close).
* ``die_after_pages:N`` exits the process (``os._exit``) once N data pages have been served.

Each request draws one number per item, in spec order, from a generator seeded with the seed;
the first item that fires is the request's only fault (so a slow answer is never also a 429
whose Retry-After the client could not see in time).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

KINDS = ("slow", "truncate", "hangup", "badrow")


class FaultSpecError(ValueError):
    """An unreadable --faults spec; the message names the offending item."""


@dataclass(frozen=True)
class Fault:
    kind: str  # an HTTP status ("429", "500") or one of KINDS
    probability: float
    argument: float | None = None


@dataclass
class Draw:
    """What to do to one request."""

    status: int | None = None
    retry_after: int | None = None
    slow_seconds: float = 0.0
    body: str | None = None  # "truncate", "hangup" or "badrow"
    fired: list[str] = field(default_factory=list)


def parse(spec: str) -> tuple[list[Fault], int | None]:
    faults: list[Fault] = []
    die_after: int | None = None
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, rest = item.partition(":")
        try:
            if kind == "die_after_pages":
                die_after = int(rest)
                if die_after < 0:
                    raise ValueError
                continue
            prob_text, _, arg_text = rest.partition(":")
            probability = float(prob_text)
            argument = float(arg_text) if arg_text else None
        except ValueError:
            raise FaultSpecError(f"fault {item!r}: expected kind:probability[:argument]") from None
        is_status = kind.isdigit() and len(kind) == 3 and kind[0] in "45"
        if not (is_status or kind in KINDS):
            raise FaultSpecError(
                f"fault {item!r}: unknown kind {kind!r} (an HTTP 4xx/5xx code, "
                f"{', '.join(KINDS)} or die_after_pages)"
            )
        if not 0 <= probability <= 1:
            raise FaultSpecError(f"fault {item!r}: probability must be within [0, 1]")
        faults.append(Fault(kind, probability, argument))
    return faults, die_after


class FaultPlan:
    def __init__(self, spec: str, seed: int) -> None:
        self.faults, self.die_after_pages = parse(spec)
        self._rng = random.Random(f"alpaca-sim-faults|{seed}")

    def draw(self) -> Draw:
        draw = Draw()
        # One number per item even after a hit, so the sequence depends on the seed only.
        hits = [f for f in self.faults if self._rng.random() < f.probability]
        if not hits:
            return draw
        fault = hits[0]
        draw.fired.append(fault.kind)
        if fault.kind == "slow":
            draw.slow_seconds = fault.argument if fault.argument is not None else 1.0
        elif fault.kind in KINDS:
            draw.body = fault.kind
        else:
            draw.status = int(fault.kind)
            if draw.status == 429:
                draw.retry_after = int(fault.argument if fault.argument is not None else 1)
        return draw
