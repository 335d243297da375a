"""Request parameters and Alpaca-style pages.

Pagination follows Alpaca: items are ordered by symbol, then time; a page holds at most
``limit`` items in total across symbols; ``next_page_token`` is the base64 of
``SYMBOL|RFC3339`` of the first item of the next page (``null`` on the last page).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import orjson

from quant_core.calendar import NEW_YORK
from quant_dev.alpaca_sim.market import Chunk, rfc3339

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
ADJUSTMENTS = ("raw", "split", "dividend", "all")
STOCK_FEEDS = ("iex", "sip", "otc", "delayed_sip", "boats", "overnight")
OPTION_FEEDS = ("opra", "indicative")
TIMEFRAMES = {"1Min": "1m", "1T": "1m", "1Day": "1d", "1D": "1d"}


class BadRequest(ValueError):
    """A parameter Alpaca would refuse with HTTP 422; the message is sent as is."""


@dataclass
class Page:
    """One response: ``key`` ("bars", "snapshots") maps names to a list of runs of
    comma-separated JSON objects (time series) or to one JSON object (latest, snapshots)."""

    key: str
    items: list[tuple[str, list[bytes] | bytes]] = field(default_factory=list)
    paginated: bool = True
    token: str | None = None

    def render(self) -> bytes:
        parts = []
        for name, value in self.items:
            body = b"[" + b",".join(value) + b"]" if isinstance(value, list) else value
            parts.append(orjson.dumps(name) + b":" + body)
        out = b'{"' + self.key.encode() + b'":{' + b",".join(parts) + b"}"
        if self.paginated:
            out += b',"next_page_token":' + (orjson.dumps(self.token) if self.token else b"null")
        return out + b"}"


# -- parameters ----------------------------------------------------------------------------------


def parse_time(name: str, text: str | None, default: datetime) -> datetime:
    if text is None or text == "":
        return default
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"invalid {name}: {text!r} is not RFC-3339") from None
    if value.tzinfo is None:
        raise BadRequest(f"invalid {name}: {text!r} has no time zone")
    return value.astimezone(UTC)


def parse_limit(text: str | None, default: int, maximum: int) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"invalid limit: {text!r} is not an integer") from None
    if not 1 <= value <= maximum:
        raise BadRequest(f"invalid limit: must be between 1 and {maximum}")
    return value


def parse_symbols(text: str | None) -> list[str]:
    symbols = sorted({s.strip().upper() for s in (text or "").split(",") if s.strip()})
    if not symbols:
        raise BadRequest("missing symbols")
    return symbols


def choice(name: str, text: str | None, allowed: Iterable[str], default: str) -> str:
    value = text or default
    if value not in allowed:
        raise BadRequest(f"invalid {name}: {value!r}")
    return value


def encode_token(symbol: str, position: str) -> str:
    return base64.b64encode(f"{symbol}|{position}".encode()).decode()


def decode_token(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    try:
        symbol, sep, position = base64.b64decode(text, validate=True).decode().partition("|")
    except (binascii.Error, UnicodeDecodeError):
        symbol, sep, position = "", "", ""
    if not sep or not symbol:
        raise BadRequest("invalid page_token")
    return symbol, position


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @classmethod
    def of(cls, params, now: datetime) -> Window:
        today = datetime.combine(now.astimezone(NEW_YORK).date(), datetime.min.time(), NEW_YORK)
        start = parse_time("start", params.get("start"), today.astimezone(UTC))
        end = parse_time("end", params.get("end"), now)
        if end < start:
            raise BadRequest("end should not be before start")
        return cls(start, end)

    def days(self) -> list[date]:
        first, last = (t.astimezone(NEW_YORK).date() for t in (self.start, self.end))
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# -- time-series pages ---------------------------------------------------------------------------


def series_page(
    key: str,
    symbols: list[str],
    days: list[date],
    chunk: Callable[[str, date], Chunk],
    start_ms: int,
    end_ms: int,
    token: str | None,
    limit: int,
) -> Page:
    """The page of bars starting at ``token`` (or at the beginning)."""
    resume = decode_token(token)
    if resume is not None:
        try:
            resume_ms = int(datetime.fromisoformat(resume[1]).timestamp() * 1000)
        except ValueError:
            raise BadRequest("invalid page_token") from None
    page = Page(key)
    taken = 0
    for symbol in symbols:
        if resume is not None and symbol < resume[0]:
            continue
        lower = resume_ms if resume is not None and symbol == resume[0] else start_ms
        rows: list[bytes] = []
        for day in days:
            bars = chunk(symbol, day)
            lo = int(np.searchsorted(bars.ts_ms, max(lower, start_ms), side="left"))
            hi = int(np.searchsorted(bars.ts_ms, end_ms, side="right"))
            if lo >= hi:
                continue
            if taken == limit:  # page full: this is where the next one starts
                page.token = encode_token(symbol, rfc3339(int(bars.ts_ms[lo])))
                break
            take = min(hi - lo, limit - taken)
            rows.append(bars.joined(lo, lo + take))
            taken += take
            if take < hi - lo:
                page.token = encode_token(symbol, rfc3339(int(bars.ts_ms[lo + take])))
                break
        if rows:
            page.items.append((symbol, rows))
        if page.token is not None:
            break
    return page


def object_page(key: str, objects: dict[str, bytes], token: str | None, limit: int) -> Page:
    """A page of per-symbol objects (snapshots), ordered by symbol."""
    resume = decode_token(token)
    names = [n for n in objects if resume is None or n >= resume[0]]
    page = Page(key, [(n, objects[n]) for n in names[:limit]])
    if len(names) > limit:
        page.token = encode_token(names[limit], "")
    return page
