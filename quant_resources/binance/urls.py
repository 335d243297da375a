"""Binance endpoints, stream names and symbol rules."""

from __future__ import annotations

import re

from quant_resources.settings import binance_rest_url, binance_ws_url

DEFAULT_WS_URL = "wss://stream.binance.com:9443"
DEFAULT_REST_URL = "https://api.binance.com"
STREAM_KINDS = ("aggTrade", "trade", "bookTicker", "depth", "depth1s")
# Our stream names -> Binance's: ``depth`` is the 100 ms diff stream, ``depth1s`` the 1 s one.
WIRE_NAMES = {"depth": "depth@100ms", "depth1s": "depth"}
MAX_STREAMS_PER_CONNECTION = 1024
_SYMBOL = re.compile(r"^[A-Za-z0-9]{2,20}$")


class BinanceConfigError(ValueError):
    """Bad symbols, streams or URLs, reported before any connection is made."""


def ws_base() -> str:
    return _bare("BINANCE_WS_URL", binance_ws_url(DEFAULT_WS_URL))


def rest_base() -> str:
    return _bare("BINANCE_REST_URL", binance_rest_url(DEFAULT_REST_URL))


def _bare(name: str, url: str) -> str:
    url = url.rstrip("/")
    if url.endswith(("/stream", "/ws", "/api/v3", "/api")):
        raise BinanceConfigError(f"{name}={url!r} must be a bare base without /stream or /api/v3")
    return url


def parse_symbols(text: str | list[str]) -> list[str]:
    """Validated, upper-case, unique symbols; a bad one is an error before connecting."""
    items = text.split(",") if isinstance(text, str) else text
    symbols: list[str] = []
    for raw in items:
        symbol = raw.strip()
        if not _SYMBOL.match(symbol):
            raise BinanceConfigError(f"symbol={symbol!r} is not a Binance symbol (letters/digits)")
        if symbol.upper() not in symbols:
            symbols.append(symbol.upper())
    if not symbols:
        raise BinanceConfigError("no symbols given")
    return symbols


def parse_streams(text: str | list[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else text
    streams = [s.strip() for s in items if s.strip()]
    for stream in streams:
        if stream not in STREAM_KINDS:
            raise BinanceConfigError(f"stream={stream!r} is not one of {', '.join(STREAM_KINDS)}")
    if not streams:
        raise BinanceConfigError("no streams given")
    return streams


def stream_names(symbols: list[str], streams: list[str]) -> list[str]:
    return [
        f"{symbol.lower()}@{WIRE_NAMES.get(kind, kind)}" for symbol in symbols for kind in streams
    ]


def shard(names: list[str], size: int = MAX_STREAMS_PER_CONNECTION) -> list[list[str]]:
    return [names[i : i + size] for i in range(0, len(names), size)]


def combined_url(base: str, names: list[str]) -> str:
    return f"{base}/stream?streams={'/'.join(names)}"
