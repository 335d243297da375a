"""Bearer-token authentication: every configured token is compared, in constant time, with the
one presented; no token configured means the service is bound to loopback (see ``serve``)."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from quant_api.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="A token listed in QUANT_API_TOKENS.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_accepted(presented: str, tokens: list[str]) -> bool:
    # Digests of equal length, every token compared (no early exit): timing reveals neither
    # which token nor how long one is.
    given = _digest(presented)
    accepted = False
    for token in tokens:
        accepted |= hmac.compare_digest(given, _digest(token))
    return accepted


async def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)
) -> None:
    tokens = request.app.state.tokens
    if not tokens:
        return
    if credentials is None:
        raise ApiError(
            401,
            "Authorization: missing bearer token (send 'Authorization: Bearer <token>')",
            "Authorization",
            headers=_CHALLENGE,
        )
    if not token_accepted(credentials.credentials, tokens):
        # The value is a secret (or a mistyped one): never echoed.
        raise ApiError(
            401, "Authorization: bearer token not accepted", "Authorization", headers=_CHALLENGE
        )
