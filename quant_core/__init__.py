"""Pure domain code of the quant platform: contracts, aggregation, session logs, replay.

Nothing in this package performs I/O or imports Dagster; the edges live in ``quant_resources``.
"""

__version__ = "0.1.0"
