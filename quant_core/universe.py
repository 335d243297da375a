"""The equity universe: symbols from a comma-separated list or a universe file, validated."""

from __future__ import annotations

import re

from quant_core.contracts import SYMBOL_PATTERN

_SYMBOL = re.compile(SYMBOL_PATTERN)


class UniverseError(ValueError):
    """An invalid universe; the message names the offending symbol."""


def parse_symbols(text: str, origin: str = "QUANT_EQUITY_SYMBOLS") -> list[str]:
    """Comma or newline separated symbols (``#`` comments allowed) -> unique upper-case list."""
    symbols: list[str] = []
    for line in text.splitlines():
        for raw in line.split("#", 1)[0].split(","):
            symbol = raw.strip()
            if not symbol:
                continue
            if not _SYMBOL.match(symbol):
                raise UniverseError(f"{origin}: symbol={symbol!r} is not a valid symbol")
            if symbol.upper() not in symbols:
                symbols.append(symbol.upper())
    if not symbols:
        raise UniverseError(f"{origin}: the universe is empty")
    return symbols
