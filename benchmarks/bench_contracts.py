"""Contract validation at the edge: pydantic v1 contracts from JSON, against a bare json parse.

The ratio says what validation costs per message; it is why the live hot loop uses the typed
fast decoder and validates only at the edges.
"""

from __future__ import annotations

import json

from benchmarks.report import Figure, best_rate
from quant_core.contracts import Bar
from quant_core.contracts.examples import examples

N = 50_000


def run() -> list[Figure]:
    bar = next(e for e in examples() if isinstance(e, Bar))
    payloads = [bar.model_dump_json().encode()] * N

    def validated() -> int:
        for raw in payloads:
            Bar.model_validate_json(raw)
        return N

    def parsed() -> int:
        for raw in payloads:
            json.loads(raw)
        return N

    return [
        Figure(
            name="Bar JSON -> validated contract",
            unit="msg/s",
            ours=best_rate(validated),
            peer_name="json.loads only (no validation)",
            peer=best_rate(parsed),
            goal="informational (edge validation cost)",
        )
    ]
