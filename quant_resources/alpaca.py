"""``AlpacaResource``: Alpaca market data (stock and option 1-minute bars, option chains) as
Arrow tables with the warehouse schemas (``BARS_1M``, ``OPTIONS_QUOTES``).

Requests go through alpaca-py (``StockHistoricalDataClient``, ``OptionHistoricalDataClient``)
with ``raw_data=True``, which also walks ``next_page_token`` to the last page. Columns are then
built with numpy straight from the JSON lists: no per-bar pydantic object, and floats become
exact decimals through ``decimal_from_scaled`` (Alpaca sends prices as shortest-repr floats).

Retries are urllib3's ``Retry`` on an ``HTTPAdapter`` mounted on the client's requests session,
not a hand loop and not alpaca-py's own (fixed 3 s sleep, 429/504 only, no jitter, which we turn
off): urllib3 honours ``Retry-After`` (capped by ``retry_after_max_seconds``), retries 5xx and
connection errors with capped exponential backoff plus jitter, and does so per HTTP request, so a
retry resumes the page that failed instead of restarting the pagination. 401/403 are never
retried. A broken page (truncated body, bad JSON, a bar with a missing field, NaN, negative
volume, inconsistent OHLC) fails the whole call; nothing partial is ever returned.

Keys come from the fields (the code location passes ``EnvVar``s) or, when those are None, from
``ALPACA_API_KEY``/``ALPACA_SECRET_KEY`` at call time. They travel only in request headers:
never in ``repr``, logs, errors or metadata.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter, itemgetter
from typing import Any
from urllib.parse import urlsplit

import msgspec
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.option import OptionHistoricalDataClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import (
    OptionBarsRequest,
    OptionChainRequest,
    StockBarsRequest,
    StockLatestBarRequest,
)
from alpaca.data.timeframe import TimeFrame
from pydantic import Field
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from quant_core.calendar import NEW_YORK, is_trading_day, session
from quant_core.tables import BARS_1M, OPTIONS_QUOTES, PRICE, decimal_from_scaled
from quant_resources.market import MarketDataResource
from quant_resources.settings import alpaca_data_url, alpaca_keys, masked_repr_args, redact_url

_log = logging.getLogger(__name__)

SOURCE = "alpaca"
KEY_VARIABLES = ("ALPACA_API_KEY", "ALPACA_SECRET_KEY")
FEEDS = ("iex", "sip")
ADJUSTMENTS = ("raw", "split", "dividend", "all")
RETRY_STATUSES = (429, 500, 502, 503, 504)
BAR_FIELDS = ("t", "o", "h", "l", "c", "v", "n", "vw")
MINUTE_MS = 60_000
SCALE = 10**PRICE.scale
SESSIONS = pa.array(["pre", "regular", "post"])
_OCC = re.compile(r"^([A-Z][A-Z0-9.]{0,5})(\d{6})([CP])(\d{8})$")


class AlpacaError(RuntimeError):
    """An Alpaca call failed; the message names the endpoint and cause, never a key."""


class AlpacaAuthError(AlpacaError):
    """Missing keys, or keys Alpaca rejected (401/403)."""


class AlpacaDataError(AlpacaError):
    """A page or record Alpaca sent is broken; the message names symbol and timestamp."""


class _TimeoutAdapter(HTTPAdapter):
    """alpaca-py sends no timeout; a hung server must become a (retried) read error."""

    def __init__(self, timeout: float, **kwargs: Any) -> None:
        self._timeout = timeout
        super().__init__(**kwargs)

    def send(self, request, **kwargs):  # type: ignore[override]
        kwargs["timeout"] = kwargs.get("timeout") or self._timeout
        return super().send(request, **kwargs)


class AlpacaResource(MarketDataResource):
    """Alpaca market data API (``data_url`` overrides the base URL, e.g. ``quant sim alpaca``)."""

    api_key: str | None = Field(
        default=None, repr=False, description="Key id; None: ALPACA_API_KEY at call time."
    )
    secret_key: str | None = Field(
        default=None, repr=False, description="Secret; None: ALPACA_SECRET_KEY at call time."
    )
    data_url: str | None = Field(
        default=None, description="Base URL; None: ALPACA_DATA_URL, else Alpaca's."
    )
    feed: str = Field(default="iex", description="Stock feed (ALPACA_FEED): iex or sip.")
    max_retries: int = Field(default=6, ge=0, description="Retries per HTTP request.")
    backoff_factor_seconds: float = Field(default=0.5, ge=0)
    backoff_max_seconds: float = Field(default=30.0, ge=0, description="Cap of one backoff.")
    backoff_jitter_seconds: float = Field(default=0.5, ge=0)
    retry_after_max_seconds: int = Field(default=120, ge=0, description="Cap on Retry-After.")
    timeout_seconds: float = Field(default=60.0, gt=0, description="Connect/read timeout.")

    def __repr_args__(self):
        # repr=False on the keys already hides them; the URL may carry credentials too.
        return masked_repr_args(
            super().__repr_args__(), urls=("data_url",), secrets=("api_key", "secret_key")
        )

    # -- public API ------------------------------------------------------------------------

    @property
    def source(self) -> str:
        return "alpaca"

    def stock_bars_1m(
        self, symbols: list[str], start: datetime, end: datetime, adjustment: str = "raw"
    ) -> pa.Table:
        """1-minute bars of ``symbols`` in [start, end] (``BARS_1M``, ordered by symbol, time)."""
        if adjustment not in ADJUSTMENTS:
            raise ValueError(f"adjustment={adjustment!r} is not one of {', '.join(ADJUSTMENTS)}")
        request = StockBarsRequest(
            symbol_or_symbols=_symbols(symbols),
            timeframe=TimeFrame.Minute,
            start=_aware("start", start),
            end=_aware("end", end),
            adjustment=Adjustment(adjustment),
            feed=DataFeed(self._feed()),
        )
        client = self._client(StockHistoricalDataClient)
        raw = self._fetch("/v2/stocks/bars", lambda: client.get_stock_bars(request))
        return bars_table(raw, adjustment, "/v2/stocks/bars")

    def option_bars_1m(self, symbols: list[str], start: datetime, end: datetime) -> pa.Table:
        """1-minute bars of option contracts (OCC symbols) in [start, end] (``BARS_1M``)."""
        request = OptionBarsRequest(
            symbol_or_symbols=_symbols(symbols),
            timeframe=TimeFrame.Minute,
            start=_aware("start", start),
            end=_aware("end", end),
        )
        client = self._client(OptionHistoricalDataClient)
        raw = self._fetch("/v1beta1/options/bars", lambda: client.get_option_bars(request))
        return bars_table(raw, "raw", "/v1beta1/options/bars")

    def option_chain_snapshot(
        self,
        underlying: str,
        at: datetime | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> pa.Table:
        """Every contract of ``underlying``'s chain (``OPTIONS_QUOTES``); ``snapshot_ts`` is
        ``clock()`` (default: UTC now) when the request starts, ``underlying_price`` the close
        of the underlying's latest 1-minute bar (null when Alpaca has none). Alpaca only serves
        the chain as it is now, so an ``at`` away from now is refused, never answered with
        today's quotes under another time."""
        (underlying,) = _symbols([underlying])
        snapshot_ts = _aware("clock()", (clock or _utc_now)())
        if at is not None and abs((_aware("at", at) - snapshot_ts).total_seconds()) > 120:
            raise AlpacaError(
                f"Alpaca serves no historical option quotes: a snapshot of {underlying} at "
                f"{at.isoformat()} cannot be taken at {snapshot_ts.isoformat()}"
            )
        options = self._client(OptionHistoricalDataClient)
        path = f"/v1beta1/options/snapshots/{underlying}"
        chain = OptionChainRequest(underlying_symbol=underlying)
        raw = self._fetch(path, lambda: options.get_option_chain(chain))
        stocks = self._client(StockHistoricalDataClient)
        latest = StockLatestBarRequest(symbol_or_symbols=underlying, feed=DataFeed(self._feed()))
        bar = self._fetch("/v2/stocks/bars/latest", lambda: stocks.get_stock_latest_bar(latest))
        spot = (bar or {}).get(underlying, {}) or {}
        return snapshots_table(raw or {}, snapshot_ts, spot.get("c"), path)

    # -- plumbing --------------------------------------------------------------------------

    def _feed(self) -> str:
        if self.feed not in FEEDS:
            raise ValueError(f"feed={self.feed!r} (ALPACA_FEED) must be one of {', '.join(FEEDS)}")
        return self.feed

    def _base_url(self) -> str | None:
        url = self.data_url or alpaca_data_url()
        return url.rstrip("/") if url else None

    def _keys(self) -> tuple[str, str]:
        env_key, env_secret = alpaca_keys()
        key = self.api_key or env_key
        secret = self.secret_key or env_secret
        missing = [name for name, v in zip(KEY_VARIABLES, (key, secret), strict=True) if not v]
        if missing:
            raise AlpacaAuthError(
                f"Alpaca keys are missing: set {' and '.join(missing)} in the environment"
            )
        return key, secret  # type: ignore[return-value]

    def _retry(self) -> Retry:
        return Retry(
            total=self.max_retries,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=RETRY_STATUSES,
            respect_retry_after_header=True,
            retry_after_max=self.retry_after_max_seconds,
            backoff_factor=self.backoff_factor_seconds,
            backoff_max=self.backoff_max_seconds,
            backoff_jitter=self.backoff_jitter_seconds,
            raise_on_status=False,  # the last 429/5xx reaches alpaca-py, which raises APIError
        )

    def _client(self, kind):
        key, secret = self._keys()
        client = kind(api_key=key, secret_key=secret, raw_data=True, url_override=self._base_url())
        if not hasattr(client, "_session") or not hasattr(client, "_retry"):
            raise AlpacaError("this alpaca-py version hides its requests session; pin alpaca-py")
        adapter = _TimeoutAdapter(self.timeout_seconds, max_retries=self._retry())
        client._session.mount("https://", adapter)
        client._session.mount("http://", adapter)
        client._retry = 0  # alpaca-py's own 429 loop would stack on top of urllib3's
        client._session.hooks["response"].append(_fast_json)
        return client

    def _fetch(self, path: str, call: Callable[[], Any]) -> Any:
        where = f"Alpaca {path} at {redact_url(self._base_url() or 'https://data.alpaca.markets')}"
        try:
            return call()
        except APIError as exc:
            status, message = exc.status_code, _api_message(exc)
            if status in (401, 403):
                raise AlpacaAuthError(
                    f"{where}: the API keys were rejected (HTTP {status}: {message}); check "
                    f"{' and '.join(KEY_VARIABLES)}"
                ) from None
            retried = f" after {self.max_retries} retries" if status in RETRY_STATUSES else ""
            raise AlpacaError(f"{where}: HTTP {status}{retried}: {message}") from exc
        except requests.exceptions.JSONDecodeError as exc:
            raise AlpacaDataError(f"{where}: a page is not valid JSON (truncated?): {exc}") from exc
        except requests.RequestException as exc:
            raise AlpacaError(f"{where}: request failed: {type(exc).__name__}: {exc}") from exc
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise AlpacaDataError(f"{where}: malformed page: {type(exc).__name__}: {exc}") from exc


class _Bar(msgspec.Struct, gc=False):
    """One bar as Alpaca sends it. Untracked by the garbage collector: a backfill holds
    hundreds of thousands of them, and dicts made the collector rescan them all again and
    again (and took twice the memory)."""

    t: str
    o: float
    h: float
    l: float  # noqa: E741 (Alpaca's field name)
    c: float
    v: float
    n: float
    vw: float


class _BarPage(msgspec.Struct, gc=False):
    bars: dict[str, list[_Bar] | None]
    next_page_token: str | None = None


_BAR_PAGE = msgspec.json.Decoder(_BarPage)
BODY_CHUNK = 1 << 20


def _fast_json(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """Let alpaca-py's ``response.json()`` decode bar pages into ``_Bar`` structs and anything
    else with orjson (both several times faster than json). A page that does not fit (missing
    field, null, text, NaN, which only Python's json reads) is decoded again by orjson, then
    by the standard decoder: the record checks then name the broken bar, and a truncated body
    still raises ``requests.JSONDecodeError``."""
    standard = response.json
    bar_page = urlsplit(response.url).path.endswith("/bars")

    def decode(**kw: Any) -> Any:
        if bar_page:
            try:
                page = _BAR_PAGE.decode(response.content)
                return {"bars": page.bars, "next_page_token": page.next_page_token}
            except msgspec.DecodeError:
                pass
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return standard(**kw)

    response.json = decode  # type: ignore[method-assign]
    if response._content is False and not kwargs.get("stream"):
        # What ``response.content`` would do next, in 1 MiB reads instead of requests' 10 KiB
        # (a Python call each: a hundred per page); the same errors for a broken body.
        response._content = b"".join(response.iter_content(BODY_CHUNK)) or b""
    return response


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}={value.isoformat()} is naive; pass a timezone-aware datetime")
    return value.astimezone(UTC)


def _symbols(symbols: list[str]) -> list[str]:
    if isinstance(symbols, str) or not symbols or not all(isinstance(s, str) for s in symbols):
        raise ValueError(f"symbols={symbols!r} must be a non-empty list of strings")
    return [s.strip().upper() for s in symbols]


def _api_message(exc: APIError) -> str:
    try:
        return str(exc.message)
    except Exception:
        return str(exc)[:200]


# -- bars ------------------------------------------------------------------------------------


def _broken(path: str, symbol: str, stamp: Any, reason: str) -> AlpacaDataError:
    return AlpacaDataError(f"Alpaca {path}: broken bar symbol={symbol} t={stamp}: {reason}")


def _column(rows: list, field: str, symbols: np.ndarray, path: str) -> np.ndarray:
    """One numeric field of every bar as float64; None, text or NaN raise naming the bar."""
    values = list(map(_field(rows, field), rows))
    try:
        array = pa.array(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        array = None
    if array is None or array.null_count:
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _broken(path, symbols[i], _field(rows, "t")(rows[i]), f"{field}={value!r}")
    result = array.to_numpy()
    bad = ~np.isfinite(result)
    if bad.any():
        i = int(np.argmax(bad))
        raise _broken(path, symbols[i], _field(rows, "t")(rows[i]), f"{field}={values[i]!r}")
    return result


def _uniform(rows: list) -> list:
    """All ``_Bar`` (every page decoded fast) or all dicts: a page that fell back to dicts
    turns the structs of the other pages into dicts too."""
    kinds = set(map(type, rows))
    if _Bar in kinds and len(kinds) > 1:
        return [msgspec.structs.asdict(r) if type(r) is _Bar else r for r in rows]
    return rows


def _field(rows: list, name: str) -> Callable[[Any], Any]:
    return attrgetter(name) if rows and type(rows[0]) is _Bar else itemgetter(name)


def _scaled(values: np.ndarray) -> np.ndarray:
    return np.rint(values * SCALE).astype(np.int64)


def _quote_volume(volume: np.ndarray, vwap_units: np.ndarray) -> pa.Array:
    """volume * vwap, exact: integer volume times vwap in 1e-8 units while that fits int64,
    Python integers otherwise (fractional volume or an enormous notional)."""
    whole = np.array_equal(volume, np.floor(volume))
    fits = volume.size == 0 or float(np.abs(volume).max()) * float(np.abs(vwap_units).max()) < 9e18
    if whole and fits:
        return decimal_from_scaled(volume.astype(np.int64) * vwap_units, PRICE.scale)
    units = [int(v) for v in _scaled(volume)]
    exact = [
        Decimal(u * w).scaleb(-2 * PRICE.scale).quantize(Decimal(1).scaleb(-PRICE.scale))
        for u, w in zip(units, vwap_units.tolist(), strict=True)
    ]
    return pa.array(exact, PRICE)


def _sessions(ts_ms: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """New York session date and pre/regular/post of each bar open."""
    local = pd.DatetimeIndex(ts_ms.astype("datetime64[ms]"), tz="UTC").tz_convert(NEW_YORK)
    day = local.tz_localize(None).as_unit("ms").asi8 // 86_400_000
    days, inverse = np.unique(day, return_inverse=True)
    bounds = np.empty((days.size, 2), dtype=np.int64)
    for i, d in enumerate(days):
        when = (pd.Timestamp(0) + pd.Timedelta(days=int(d))).date()
        if is_trading_day(when):
            s = session(when)
            bounds[i] = (s.open.timestamp() * 1000, s.close.timestamp() * 1000)
        else:  # no session that day: label by the clock of an ordinary one
            bounds[i] = [
                pd.Timestamp(f"{when} {hm}", tz=NEW_YORK).value // 1_000_000
                for hm in ("09:30", "16:00")
            ]
    opens, closes = bounds[inverse, 0], bounds[inverse, 1]
    codes = np.where(ts_ms < opens, 0, np.where(ts_ms >= closes, 2, 1)).astype(np.int8)
    labels = pa.DictionaryArray.from_arrays(pa.array(codes), SESSIONS).cast(pa.string())
    return pa.array(day.astype(np.int32), pa.date32()), labels


def bars_table(raw: dict[str, list[dict]], adjustment: str, path: str) -> pa.Table:
    """Alpaca bars keyed by symbol -> ``BARS_1M``, validated; any broken bar raises."""
    names = sorted(raw)
    rows = [bar for name in names for bar in (raw[name] or ())]
    counts = [len(raw[name] or ()) for name in names]
    symbol_codes = np.repeat(np.arange(len(names), dtype=np.int32), counts)
    symbols = np.array(names, dtype=object)[symbol_codes] if rows else np.array([], dtype=object)
    if not rows:
        return BARS_1M.empty_table()
    try:
        rows = _uniform(rows)
        stamps = list(map(_field(rows, "t"), rows))
        o, h, low, c, v, n, vw = (_column(rows, f, symbols, path) for f in BAR_FIELDS[1:])
    except (KeyError, TypeError):  # a bar lacks a field or is not an object: name it
        for i, bar in enumerate(rows):
            lacking = [f for f in BAR_FIELDS if not isinstance(bar, dict) or f not in bar]
            if lacking:
                stamp = bar.get("t") if isinstance(bar, dict) else None
                raise _broken(path, symbols[i], stamp, f"missing {', '.join(lacking)}") from None
        raise
    try:
        ts = pa.array(stamps, pa.string()).cast(pa.timestamp("ns", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        for i, stamp in enumerate(stamps):
            try:
                pa.array([stamp], pa.string()).cast(pa.timestamp("ns", tz="UTC"))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise _broken(path, symbols[i], stamp, "t is not RFC 3339") from None
        raise
    ts_ms = ts.cast(pa.timestamp("ms", tz="UTC"), safe=False).cast(pa.int64()).to_numpy()
    problems = [
        (low <= 0, "low is not positive"),
        (h < low, "high < low"),
        ((o < low) | (o > h), "open outside [low, high]"),
        ((c < low) | (c > h), "close outside [low, high]"),
        ((vw < low) | (vw > h), "vwap outside [low, high]"),
        (v < 0, "negative volume"),
        ((n < 0) | (n != np.floor(n)), "trade count is not a whole number >= 0"),
        (_not_increasing(ts_ms, symbol_codes), "not after the previous bar (duplicate page?)"),
    ]
    for bad, reason in problems:
        if bad.any():
            i = int(np.argmax(bad))
            detail = {"o": o[i], "h": h[i], "l": low[i], "c": c[i], "v": v[i], "vw": vw[i]}
            raise _broken(path, symbols[i], stamps[i], f"{reason} ({detail})")
    size = len(rows)
    vwap_units = _scaled(vw)
    session_date, session_labels = _sessions(ts_ms)
    zero = decimal_from_scaled(np.zeros(size, dtype=np.int64), 0)
    return pa.Table.from_arrays(
        [
            pa.repeat(SOURCE, size),
            pa.DictionaryArray.from_arrays(pa.array(symbol_codes), pa.array(names)).cast(
                pa.string()
            ),
            pa.repeat("1m", size),
            pa.array(ts_ms, pa.timestamp("ms", tz="UTC")),
            pa.array(ts_ms + MINUTE_MS - 1, pa.timestamp("ms", tz="UTC")),
            session_date,
            session_labels,
            decimal_from_scaled(_scaled(o), PRICE.scale),
            decimal_from_scaled(_scaled(h), PRICE.scale),
            decimal_from_scaled(_scaled(low), PRICE.scale),
            decimal_from_scaled(_scaled(c), PRICE.scale),
            decimal_from_scaled(_scaled(v), PRICE.scale),
            _quote_volume(v, vwap_units),
            decimal_from_scaled(vwap_units, PRICE.scale),
            pa.array(n.astype(np.uint64), pa.uint64()),
            zero,
            zero,
            pa.repeat(adjustment, size),
            pa.array(np.ones(size)),
        ],
        schema=BARS_1M,
    )


def _not_increasing(ts_ms: np.ndarray, codes: np.ndarray) -> np.ndarray:
    bad = np.zeros(ts_ms.size, dtype=bool)
    bad[1:] = (codes[1:] == codes[:-1]) & (ts_ms[1:] <= ts_ms[:-1])
    return bad


# -- option snapshots --------------------------------------------------------------------------


def _optional(values: list, name: str, occ: list[str], stamps: list, path: str) -> pa.Array:
    """Nullable non-negative numbers -> exact decimals (None stays null, NaN/negative raise)."""
    for i, value in enumerate(values):
        bad_type = value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float)
        )
        if bad_type or (value is not None and not 0 <= value < float("inf")):
            raise AlpacaDataError(
                f"Alpaca {path}: broken snapshot symbol={occ[i]} t={stamps[i]}: {name}={value!r}"
            )
    mask = np.array([v is None for v in values], dtype=bool)
    floats = np.array([0.0 if v is None else v for v in values], dtype=np.float64)
    array = decimal_from_scaled(_scaled(floats), PRICE.scale)
    return pc.if_else(pa.array(mask), pa.scalar(None, PRICE), array) if mask.any() else array


def _optional_float(values: list, name: str, occ: list[str], stamps: list, path: str) -> pa.Array:
    for i, value in enumerate(values):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is not None and (not number or not np.isfinite(value)):
            raise AlpacaDataError(
                f"Alpaca {path}: broken snapshot symbol={occ[i]} t={stamps[i]}: {name}={value!r}"
            )
    return pa.array(values, pa.float64())


def snapshots_table(
    raw: dict[str, dict], snapshot_ts: datetime, spot: float | None, path: str
) -> pa.Table:
    """Alpaca option snapshots keyed by OCC symbol -> ``OPTIONS_QUOTES`` (sorted by symbol)."""
    occ = sorted(raw)
    snaps = [raw[s] or {} for s in occ]
    quotes = [s.get("latestQuote") or {} for s in snaps]
    trades = [s.get("latestTrade") or {} for s in snaps]
    greeks = [s.get("greeks") or {} for s in snaps]
    stamps = [q.get("t") or t.get("t") for q, t in zip(quotes, trades, strict=True)]
    parsed = []
    for symbol, stamp in zip(occ, stamps, strict=True):
        match = _OCC.match(symbol)
        if match is None or stamp is None:
            why = "not an OCC symbol" if match is None else "neither a quote nor a trade time"
            raise AlpacaDataError(
                f"Alpaca {path}: broken snapshot symbol={symbol} t={stamp}: {why}"
            )
        parsed.append(match.groups())
    size = len(occ)
    try:
        ts = pa.array(stamps, pa.string()).cast(pa.timestamp("ns", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise AlpacaDataError(f"Alpaca {path}: a snapshot time is not RFC 3339") from None
    ts = ts.cast(pa.timestamp("ms", tz="UTC"), safe=False)
    columns = {
        name: _optional([d.get(key) for d in source], name, occ, stamps, path)
        for name, source, key in (
            ("bid_price", quotes, "bp"),
            ("ask_price", quotes, "ap"),
            ("bid_size", quotes, "bs"),
            ("ask_size", quotes, "as"),
            ("last_price", trades, "p"),
        )
    }
    crossed = pc.fill_null(pc.greater(columns["bid_price"], columns["ask_price"]), False)
    if pc.any(crossed).as_py():
        i = int(np.argmax(crossed.to_numpy(zero_copy_only=False)))
        raise AlpacaDataError(
            f"Alpaca {path}: broken snapshot symbol={occ[i]} t={stamps[i]}: bid > ask"
        )
    greek = {
        g: _optional_float([d.get(g) for d in greeks], g, occ, stamps, path)
        for g in ("delta", "gamma", "theta", "vega", "rho")
    }
    iv = _optional_float([s.get("impliedVolatility") for s in snaps], "iv", occ, stamps, path)
    snap_ms = int(snapshot_ts.timestamp() * 1000)
    local_day = snapshot_ts.astimezone(NEW_YORK).date()
    spot_array = _optional([spot] * size, "underlying_price", occ, stamps, path)
    return pa.Table.from_arrays(
        [
            pa.repeat(SOURCE, size),
            pa.array([p[0] for p in parsed], pa.string()),
            pa.array(occ, pa.string()),
            pa.array([_expiry(p[1]) for p in parsed], pa.date32()),
            decimal_from_scaled(np.array([int(p[3]) for p in parsed], dtype=np.int64), 3),
            pa.array(["call" if p[2] == "C" else "put" for p in parsed], pa.string()),
            ts,
            pa.array(np.full(size, snap_ms, dtype=np.int64), pa.timestamp("ms", tz="UTC")),
            pa.array([local_day] * size, pa.date32()),
            columns["bid_price"],
            columns["ask_price"],
            columns["bid_size"],
            columns["ask_size"],
            columns["last_price"],
            spot_array,
            iv,
            greek["delta"],
            greek["gamma"],
            greek["theta"],
            greek["vega"],
            greek["rho"],
        ],
        schema=OPTIONS_QUOTES,
    )


def _expiry(yymmdd: str):
    return datetime.strptime(yymmdd, "%y%m%d").date()
