"""Reconnect delays: capped exponential backoff with full jitter (AWS architecture blog's
"full jitter"), reset after a healthy period. Pure: the caller supplies the random source."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_s: float = 0.5
    cap_s: float = 30.0
    healthy_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**self.attempt)
        self.attempt += 1
        return self.rng.uniform(0, ceiling)

    def connected_for(self, seconds: float) -> None:
        """Forget past failures once a connection has stayed up for ``healthy_s``."""
        if seconds >= self.healthy_s:
            self.attempt = 0
