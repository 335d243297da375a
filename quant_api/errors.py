"""Every refusal is a 4xx whose body names the parameter and the value it refused.

Bad input never reaches a query; a failing backend (warehouse, Redis, lake) is a 503 that names
the backend, never a bare 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

_log = logging.getLogger(__name__)
_MAX_SHOWN = 120  # characters of a refused value echoed back


class ErrorBody(BaseModel):
    """What went wrong, the parameter concerned and the value refused (when there is one)."""

    detail: str
    parameter: str | None = None
    value: str | None = None


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        parameter: str | None = None,
        value: object = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.body = ErrorBody(detail=detail, parameter=parameter, value=shown(value))
        self.headers = headers


class BackendUnavailable(Exception):
    """A backend failed; the message names it and never carries a secret."""


def shown(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def bad_request(parameter: str, value: object, why: str) -> ApiError:
    return ApiError(400, f"{parameter}={shown(value)!r}: {why}", parameter, value)


def _response(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def error_response(exc: ApiError | BackendUnavailable) -> JSONResponse:
    """The answer to a refusal or a failed backend, wherever in the service it was raised."""
    if isinstance(exc, BackendUnavailable):
        _log.error("backend unavailable: %s", exc)
        return _response(503, ErrorBody(detail=str(exc)))
    return _response(exc.status, exc.body, exc.headers)


def _validation_message(error: dict) -> tuple[str, str | None, str]:
    loc = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "header")]
    parameter = ".".join(loc) or "request"
    kind = error.get("type", "")
    value = error.get("input")
    if kind == "missing":
        return parameter, None, f"{parameter} is required"
    msg = error.get("msg", "is invalid")
    if kind == "timezone_aware":
        msg = "must carry a timezone (e.g. 2024-01-02T14:30:00Z or +00:00)"
    return parameter, shown(value), f"{parameter}={shown(value)!r}: {msg}"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parameter, value, detail = _validation_message(exc.errors()[0])
        return _response(400, ErrorBody(detail=detail, parameter=parameter, value=value))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            detail = f"no such endpoint: {request.url.path}"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        else:
            detail = str(exc.detail)
        return _response(exc.status_code, ErrorBody(detail=detail), exc.headers)

    @app.exception_handler(BackendUnavailable)
    async def unavailable(_: Request, exc: BackendUnavailable) -> JSONResponse:
        return error_response(exc)
