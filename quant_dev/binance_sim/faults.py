"""Fault specs (``kind:count_or_rate[:param]``) and their deterministic schedule.

The schedule counts data frames sent over the whole run (all connections): an integer count N
fires N times with seeded gaps of 1..2*gap frames; a rate r (a number with a '.') fires on each
frame with probability r (geometric gaps). The same seed and the same traffic give the same
faults at the same frames.

``drops:N[:k]``: each firing silently leaves out the next k trade frames (aggTrade/trade,
default 1) published to that client while it stays connected; the connection stays open, so
the client learns of them only from the id gap and recovers them from REST.

``lose:N[:k]``: like ``drops`` (aggTrade/trade frames), and those trades are also gone from
REST (the simulator forgets them): an aggTrade from ``/api/v3/aggTrades``, a trade from
``/api/v3/historicalTrades``. A loss no client can repair, which only the exchange's archive
reveals. The lost ids are listed in the stats (``lost_agg_ids``, ``lost_trade_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = (
    "disconnect",
    "stall",
    "malformed",
    "duplicate",
    "reorder",
    "drops",
    "lose",
    "shutdown",
    "slowreader",
)
DEFAULT_PARAM = {"stall": 2.0, "shutdown": 1.0, "drops": 1.0, "lose": 1.0}
FRAME_COUNTS = ("drops", "lose")  # their param is a whole number of frames


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class FaultRule:
    kind: str
    count: int | None  # fire this many times in total
    rate: float | None  # or: probability per data frame
    param: float | None  # stall/shutdown seconds; drops/lose: trade frames per firing


def parse(spec: str) -> list[FaultRule]:
    rules = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        fields = item.split(":")
        if len(fields) not in (2, 3) or fields[0] not in KINDS:
            raise FaultSpecError(
                f"fault {item!r} is not kind:count_or_rate[:param] with kind in {', '.join(KINDS)}"
            )
        kind, amount = fields[0], fields[1]
        try:
            if "." in amount or "e" in amount.lower():
                count, rate = None, float(amount)
                if not 0 < rate <= 1:
                    raise ValueError
            else:
                count, rate = int(amount), None
                if count < 0:
                    raise ValueError
            param = float(fields[2]) if len(fields) == 3 else DEFAULT_PARAM.get(kind)
            if param is not None and (param < 0 or (kind in FRAME_COUNTS and param != int(param))):
                raise ValueError
        except ValueError:
            raise FaultSpecError(
                f"fault {item!r}: the amount must be a count >= 0 or a rate in (0, 1], "
                "the param seconds >= 0 (for drops and lose a whole number of frames)"
            ) from None
        rules.append(FaultRule(kind, count, rate, param))
    return rules


class FaultPlan:
    """Which faults fall due as frames are sent; thread-unsafe, event-loop owned."""

    def __init__(self, rules: list[FaultRule], seed: int, gap: int = 1000) -> None:
        self.rng = np.random.Generator(np.random.PCG64([seed, 0xFA017]))
        self.gap = max(1, gap)
        self.frames = 0
        self.rules = rules
        self._remaining = {i: r.count for i, r in enumerate(rules) if r.count is not None}
        self._next = {i: self._draw(r) for i, r in enumerate(rules) if r.count != 0}

    def _draw(self, rule: FaultRule) -> int:
        if rule.rate is not None:
            return self.frames + int(self.rng.geometric(rule.rate))
        return self.frames + int(self.rng.integers(1, 2 * self.gap + 1))

    def advance(self, n: int) -> list[tuple[str, float | None]]:
        """n more data frames are being sent: the faults due within them, in order."""
        self.frames += n
        fired = []
        while True:
            due = [(at, i) for i, at in self._next.items() if at <= self.frames]
            if not due:
                return fired
            _, i = min(due)
            rule = self.rules[i]
            fired.append((rule.kind, rule.param))
            if i in self._remaining:
                self._remaining[i] -= 1
                if self._remaining[i] == 0:
                    del self._next[i]
                    continue
            self._next[i] = self._draw(rule)

    def pick(self, n: int) -> int:
        """A seeded choice in range(n) (which frame to duplicate, which malformation...)."""
        return int(self.rng.integers(0, n)) if n > 1 else 0

    def describe(self) -> list[dict]:
        return [
            {
                "kind": r.kind,
                "count": r.count,
                "rate": r.rate,
                "param": r.param,
                "remaining": self._remaining.get(i),
            }
            for i, r in enumerate(self.rules)
        ]
