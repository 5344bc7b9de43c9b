"""Authentication of API requests: one middleware in front of every ``/api/`` route.

With EDGEPM_API_TOKEN set, a request must carry ``Authorization: Bearer <token>``.
Health and metrics endpoints stay open so probes and scrapers need no secret.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from control_plane.api.errors import ApiError
from control_plane.api.keys import PRINCIPAL, SETTINGS

logger = logging.getLogger(__name__)

PROTECTED_PREFIX = "/api/"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="edgepm"'}


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Reject ``/api/`` requests without the configured bearer token with a 401."""
    if not request.path.startswith(PROTECTED_PREFIX):
        return await handler(request)
    token = request.app[SETTINGS].api_token
    if token is None:
        request[PRINCIPAL] = "anonymous"
        return await handler(request)

    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(
            401,
            "missing bearer token; send the header 'Authorization: Bearer <token>' "
            "with the token set in EDGEPM_API_TOKEN",
            headers=_CHALLENGE,
        )
    # compare_digest takes as long for a near miss as for a far one, so response
    # times do not reveal how much of a guessed token was right.
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise ApiError(
            401,
            "invalid bearer token; use the token set in EDGEPM_API_TOKEN",
            headers=_CHALLENGE,
        )
    request[PRINCIPAL] = "token"
    return await handler(request)
