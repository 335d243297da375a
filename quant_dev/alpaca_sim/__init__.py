"""A local Alpaca-compatible market-data server (``quant sim alpaca``) for tests and the demo.

It answers ``/v2/stocks/bars``, ``/v2/stocks/bars/latest``, ``/v1beta1/options/bars`` and
``/v1beta1/options/snapshots/{underlying}`` like Alpaca (auth headers, 422s, pagination with
``next_page_token``) from ``quant_core.synthetic``, with deterministic fault injection
(``faults``) and request/fault counters at ``GET /_sim/stats``.

Modules: ``market`` (data in Alpaca's JSON shapes), ``pages`` (parameters and pagination),
``faults`` (the --faults spec), ``app`` (routes), ``server`` (uvicorn runner).
"""

from quant_dev.alpaca_sim.app import SimConfig, create_app

__all__ = ["SimConfig", "create_app"]
