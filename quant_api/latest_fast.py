"""``GET /v1/latest/{symbol}?source=`` answered before FastAPI's routing, dependencies and
response handling, which cost several times the answer itself.

The valid, authorised request is answered here by the route's own function
(``quant_api.latest.LatestAnswers.body``: Redis through one pipelined MGET on the event loop,
the warehouse for what Redis lacks, 404 when nothing is known), with the same response class,
headers and error bodies as the route (``quant_api.errors.error_response``). What FastAPI
would refuse before the route runs (a missing or bad token, a symbol or source not matching its
pattern, an unexpected query parameter, another method) is declined here and goes on to FastAPI,
so those errors have one implementation too.
"""

from __future__ import annotations

import re

from fastapi import Response

from quant_api.auth import token_accepted
from quant_api.errors import ApiError, BackendUnavailable, error_response
from quant_api.formats import JSON
from quant_core.contracts import SYMBOL_PATTERN
from quant_core.contracts.types import SOURCE_PATTERN

PREFIX = "/v1/latest/"
_SYMBOL = re.compile(SYMBOL_PATTERN)
_SOURCE = re.compile(rb"source=(" + SOURCE_PATTERN.strip("^$").encode() + rb")")


class LatestBeforeRouting:
    """Called by the service (``quant_api.app.DataService``) for every request before FastAPI;
    ``state`` is the application's (``state.latest`` answers; read at each request)."""

    def __init__(self, state) -> None:
        self.state = state

    async def answered(self, scope, receive, send) -> bool:
        """Whether the request was answered here (else FastAPI must)."""
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return False
        series = self.series(scope)
        if series is None:
            return False
        try:
            body = await self.state.latest.body(*series)
        except (ApiError, BackendUnavailable) as exc:
            response = error_response(exc)
        else:
            response = Response(body, media_type=JSON)
        await response(scope, receive, send)
        return True

    def series(self, scope) -> tuple[str, str] | None:
        """(source, SYMBOL) of a request the route would accept, or None: FastAPI decides."""
        if scope["method"] != "GET" or scope.get("root_path"):
            return None
        symbol = scope["path"][len(PREFIX) :]
        if "/" in symbol or not _SYMBOL.fullmatch(symbol):  # the route's path parameter rules
            return None
        # Only the plain query "source=<value>" (no escapes, no other parameter): anything
        # else is parsed and checked by FastAPI.
        query = _SOURCE.fullmatch(scope["query_string"])
        if query is None or not self.admitted(scope["headers"]):
            return None
        return query.group(1).decode(), symbol.upper()

    def admitted(self, headers) -> bool:
        """The token is accepted (or none is configured), and no CORS headers are due: a
        cross-origin request goes through FastAPI's CORS middleware."""
        tokens, cors = self.state.tokens, self.state.cors_origins
        authorization = None
        for name, value in headers:
            if name == b"authorization" and authorization is None:
                authorization = value
            elif name == b"origin" and cors:
                return False
        if not tokens:
            return True
        if authorization is None:
            return False
        # As fastapi.security.HTTPBearer reads it: "<scheme> <credentials>".
        scheme, _, credentials = authorization.decode("latin-1").partition(" ")
        return (
            scheme.lower() == "bearer" and bool(credentials) and token_accepted(credentials, tokens)
        )
