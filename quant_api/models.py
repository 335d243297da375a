"""Response bodies of the data service: v1 contracts wrapped in pages and provenance."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from quant_core.contracts import Bar, BookSnapshot, BookTicker, OptionsQuote, Trade

Origin = Literal["redis", "clickhouse"]


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class BarsPage(_Body):
    data: list[Bar]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class LatestTrade(_Body):
    origin: Origin = Field(alias="from")
    value: Trade


class LatestBookTicker(_Body):
    origin: Origin = Field(alias="from")
    value: BookTicker


class LatestBar(_Body):
    origin: Origin = Field(alias="from")
    value: Bar


class LatestBook(_Body):
    origin: Origin = Field(alias="from")
    value: BookSnapshot  # books2: the book snapshot contract, with its completeness flags


class Latest(_Body):
    source: str
    symbol: str
    trade: LatestTrade | None = None
    book_ticker: LatestBookTicker | None = None
    bar: LatestBar | None = None
    book: LatestBook | None = Field(default=None, description="Only from Redis (no table).")


class OptionsChain(_Body):
    source: str
    underlying: str
    snapshot_ts: datetime = Field(description="The chain snapshot taken last at or before `at`.")
    truncated: bool = Field(description="True when the chain had more contracts than `limit`.")
    data: list[OptionsQuote]


class Verification(_Body):
    status: Literal["passed", "failed", "not_verified", "unknown"] = Field(
        description="From the replay_verification asset and its checks in the Dagster instance "
        "(`unknown` when DAGSTER_HOME is not set)."
    )
    chain_intact: bool | None = None
    bars_match_warehouse: bool | None = None
    final_digest: str | None = None
    trades: int | None = None
    bars: int | None = None
    error: str | None = None
    verified_at: datetime | None = None


class SessionSummary(_Body):
    session_id: str
    state: str = Field(description="`open` while recording, `closed` once sealed.")
    venue: str | None = None
    symbols: list[str] = []
    streams: list[str] = []
    started_at: datetime | None = None
    segments: int
    records: int | None = None
    counts: dict[str, int] = {}
    final_digest: str | None = None
    clean: bool | None = None


class SessionDetail(SessionSummary):
    verification: Verification


class Sessions(_Body):
    data: list[SessionSummary]


class Component(_Body):
    ok: bool
    detail: str


class Health(_Body):
    status: Literal["ok", "degraded"]
    version: str
    contracts: str
    clickhouse: Component
    redis: Component
    lake: Component
