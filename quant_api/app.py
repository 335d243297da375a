"""The FastAPI application of the data service (routes under ``/v1``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from quant_api import bars as bars_sql
from quant_api import errors, latest, options, sessions
from quant_api.auth import require_token
from quant_api.backends import backend
from quant_api.errors import ApiError, ErrorBody, bad_request
from quant_api.formats import ARROW, BINARY, JSON, PARQUET, negotiate, table_response
from quant_api.latest_fast import LatestBeforeRouting
from quant_api.models import (
    BarsPage,
    Component,
    Health,
    Latest,
    OptionsChain,
    SessionDetail,
    Sessions,
)
from quant_core import __version__
from quant_core.contracts import SCHEMA_VERSION, SYMBOL_PATTERN, Bar, Interval
from quant_core.contracts.types import ID_PATTERN, SOURCE_PATTERN
from quant_resources import settings
from quant_resources.lake import LakeResource
from quant_resources.latest_store import LatestStore
from quant_resources.warehouse import WarehouseResource

_log = logging.getLogger(__name__)
# Timestamps ClickHouse's DateTime64(3) holds, and this service accepts.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class BarInterval(StrEnum):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    D1 = "1d"


ERRORS = {
    400: {"model": ErrorBody, "description": "Bad input; names the parameter and value."},
    401: {"model": ErrorBody, "description": "Missing or unaccepted bearer token."},
    404: {"model": ErrorBody, "description": "Nothing stored under that name."},
    503: {"model": ErrorBody, "description": "A backend (warehouse, Redis, lake) failed."},
}
Symbol = Annotated[str, Query(pattern=SYMBOL_PATTERN, description="Instrument, any case.")]
Source = Annotated[
    str, Query(pattern=SOURCE_PATTERN, description="Data provider: binance, alpaca, ...")
]
Limit = Annotated[
    int | None,
    Query(ge=1, description="Rows a page holds (QUANT_API_PAGE_SIZE; QUANT_API_MAX_PAGE_SIZE)."),
]


def _check_time(parameter: str, value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise bad_request(parameter, value.isoformat(), "must lie between 1970 and 2200")
    return value.astimezone(UTC)


def _limit(request: Request, limit: int | None) -> int:
    state = request.app.state
    if limit is None:
        return min(state.page_size, state.max_page_size)
    if limit > state.max_page_size:
        raise bad_request("limit", limit, f"exceeds the maximum page size {state.max_page_size}")
    return limit


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v1", responses=ERRORS)
    protected = [Depends(require_token)]

    @router.get(
        "/bars",
        response_model=BarsPage,
        dependencies=protected,
        responses={
            200: {
                "description": "A page of bars, oldest first. The next page's cursor is also "
                "in the X-Next-Cursor header (absent on the last page).",
                "content": {ARROW: BINARY, PARQUET: BINARY},
            },
            406: {"model": ErrorBody, "description": "No supported type in Accept."},
        },
    )
    def get_bars(
        request: Request,
        symbol: Symbol,
        source: Source,
        start: Annotated[AwareDatetime, Query(description="Inclusive; must carry a timezone.")],
        end: Annotated[AwareDatetime, Query(description="Exclusive; must carry a timezone.")],
        interval: Annotated[BarInterval, Query(description="Bar length.")] = BarInterval.M1,
        limit: Limit = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Response:
        """Bars of one symbol from the warehouse; 1m as stored, longer intervals rolled up."""
        media = negotiate(request.headers.get("accept"))
        start, end = _check_time("start", start), _check_time("end", end)
        if end <= start:
            raise bad_request("end", end.isoformat(), f"must be after start={start.isoformat()}")
        max_days = request.app.state.max_range_days
        if end - start > timedelta(days=max_days):
            raise bad_request(
                "end",
                end.isoformat(),
                f"spans more than {max_days} days from start={start.isoformat()} "
                "(QUANT_API_MAX_RANGE_DAYS); split the request",
            )
        query = bars_sql.BarsQuery(source, symbol.upper(), Interval(interval.value), start, end)
        rows = _limit(request, limit)
        warehouse = request.app.state.warehouse
        with backend("warehouse", warehouse.display_url):
            page = bars_sql.fetch_page(warehouse, query, rows, cursor)
            next_cursor = page.next_cursor
            unknown = cursor is None and page.rows == 0
            if unknown and not bars_sql.series_exists(warehouse, source, query.symbol):
                raise ApiError(
                    404,
                    f"symbol={query.symbol!r} has no bars from source={source!r}",
                    "symbol",
                    query.symbol,
                )
        headers = {"X-Next-Cursor": next_cursor} if next_cursor else {}
        if media == ARROW and page.arrow is not None:
            return Response(page.arrow, media_type=ARROW, headers=headers)
        if media != JSON:
            return table_response(page.table(), media, headers)
        body = BarsPage(
            data=[Bar.model_validate(row) for row in page.table().to_pylist()],
            next_cursor=next_cursor,
        )
        return Response(body.model_dump_json(), media_type=JSON, headers=headers)

    @router.get("/latest/{symbol}", response_model=Latest, dependencies=protected)
    async def get_latest(
        request: Request,
        symbol: Annotated[str, Path(pattern=SYMBOL_PATTERN)],
        source: Source,
    ) -> Response:
        """The newest trade, book ticker, 1m bar and book: Redis when it holds them, else
        the warehouse; each item says which (`from`)."""
        # A valid, authorised request never gets here: quant_api.latest_fast answers it before
        # routing, with the same function. The route documents the endpoint and serves what
        # the early layer declines, which FastAPI refuses first (token, parameters).
        body = await request.app.state.latest.body(source, symbol.upper())
        return Response(body, media_type=JSON)

    @router.get("/options/chain/{underlying}", response_model=OptionsChain, dependencies=protected)
    def get_options_chain(
        request: Request,
        underlying: Annotated[str, Path(pattern=SYMBOL_PATTERN)],
        source: Source,
        at: Annotated[
            AwareDatetime | None, Query(description="Default: now. Must carry a timezone.")
        ] = None,
        limit: Limit = None,
    ) -> OptionsChain:
        """The last chain snapshot of UNDERLYING taken at or before `at`."""
        when = _check_time("at", at) if at is not None else datetime.now(UTC)
        rows = _limit(request, limit)
        warehouse = request.app.state.warehouse
        name = underlying.upper()
        with backend("warehouse", warehouse.display_url):
            snap = options.snapshot_time(warehouse, source, name, when)
            if snap is None:
                raise ApiError(
                    404,
                    f"underlying={name!r} has no option chain snapshot from source={source!r} "
                    f"at or before at={when.isoformat()}",
                    "underlying",
                    name,
                )
            return options.chain(warehouse, source, name, snap, rows)

    @router.get("/sessions", response_model=Sessions, dependencies=protected)
    def get_sessions(request: Request) -> Sessions:
        """Recorded live sessions found in the lake (their manifests)."""
        lake = request.app.state.lake
        with backend("lake", lake.display_url):
            return Sessions(data=sessions.list_sessions(lake))

    @router.get("/sessions/{session_id}", response_model=SessionDetail, dependencies=protected)
    def get_session(
        request: Request, session_id: Annotated[str, Path(pattern=ID_PATTERN)]
    ) -> SessionDetail:
        """One session's manifest and its replay verification (status, digest, counts)."""
        lake = request.app.state.lake
        with backend("lake", lake.display_url):
            found = sessions.detail(lake, session_id)
        if found is None:
            raise ApiError(
                404, f"session_id={session_id!r} is not in the lake", "session_id", session_id
            )
        return found

    @router.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "A backend is unreachable."}},
    )
    def get_health(request: Request) -> JSONResponse:
        """Whether the warehouse, Redis (when configured) and the lake answer. No token needed."""
        report = health(request.app.state)
        return JSONResponse(
            report.model_dump(mode="json"), status_code=200 if report.status == "ok" else 503
        )

    return router


def _probe(check) -> Component:
    try:
        return Component(ok=True, detail=check())
    except Exception as exc:  # a health probe reports every failure, whatever its type
        return Component(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])


def health(state) -> Health:
    def clickhouse() -> str:
        state.warehouse.scalar("SELECT 1")
        return state.warehouse.display_url

    def redis() -> str:
        if state.latest_store is None:
            return "not configured (REDIS_URL unset)"
        state.latest_store.ping()
        return state.latest_store.display_url

    def lake() -> str:
        # One object lookup (a missing one is fine): reachability, not a listing of everything.
        state.lake.exists(f"{sessions.PREFIX}health-probe")
        return state.lake.display_url

    parts = {"clickhouse": _probe(clickhouse), "redis": _probe(redis), "lake": _probe(lake)}
    ok = all(part.ok for part in parts.values())
    return Health(
        status="ok" if ok else "degraded",
        version=__version__,
        contracts=SCHEMA_VERSION,
        **parts,
    )


class DataService(FastAPI):
    """FastAPI, with the valid ``/v1/latest`` request answered before its middleware, routing
    and dependencies (``quant_api.latest_fast``; profiled, they cost several times the
    answer itself)."""

    async def __call__(self, scope, receive, send) -> None:
        if not await self.state.latest_early.answered(scope, receive, send):
            await super().__call__(scope, receive, send)


def create_app(
    *,
    warehouse: WarehouseResource | None = None,
    lake: LakeResource | None = None,
    latest_store: LatestStore | None = None,
    tokens: list[str] | None = None,
    cors_origins: list[str] | None = None,
) -> DataService:
    """The service; anything not given comes from the environment (quant_resources.settings)."""
    app = DataService(
        title="quant data service",
        version=__version__,
        description="Bars, latest values, option chains and session logs of the quant "
        "platform, as v1 contracts (decimals as strings, UTC timestamps).",
    )
    state = app.state
    state.warehouse = warehouse or WarehouseResource()
    state.lake = lake or LakeResource()
    if latest_store is None and settings.redis_url():
        latest_store = LatestStore(settings.redis_url())
    state.latest_store = latest_store
    state.tokens = settings.api_tokens() if tokens is None else tokens
    state.page_size = settings.api_page_size()
    state.max_page_size = settings.api_max_page_size()
    state.max_range_days = settings.api_max_range_days()
    origins = settings.api_cors_origins() if cors_origins is None else cors_origins
    state.cors_origins = origins
    state.latest = latest.LatestAnswers(state)
    state.latest_early = LatestBeforeRouting(state)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET"],
            allow_headers=["Authorization", "Accept"],
            expose_headers=["X-Next-Cursor"],
        )
    errors.install(app)
    app.include_router(build_router())
    app.openapi = lambda: openapi_document(app)
    return app


def openapi_document(app: FastAPI) -> dict:
    """FastAPI's document, with its 422 answers dropped: this service answers bad input 400."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            doc.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = doc
    return app.openapi_schema
