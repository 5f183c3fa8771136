"""The admin surface's lock: a token in the `X-Admin-Token` header, compared in constant time.

Without `admin_token` in the settings the admin routes are off (404). A route joins the admin
surface with one line: `@admin_router.post(...)` in `recsys.serve.app`, or
`dependencies=[AdminAuth]` on any router or route. A custom header also means a browser cannot send
the request from another site's page without a CORS preflight, which this service never grants.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from recsys.serve.schemas import ErrorResponse

log = logging.getLogger(__name__)

ADMIN_HEADER = "X-Admin-Token"

_token_header = APIKeyHeader(
    name=ADMIN_HEADER,
    scheme_name="AdminToken",
    description="The service's admin_token (RECSYS_SERVE_ADMIN_TOKEN); admin routes are off without one.",
    auto_error=False,  # a missing header is answered below, with our own 401 body
)

# what the admin dependency can answer, for the OpenAPI document of every route that uses it
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong X-Admin-Token header"},
    404: {"model": ErrorResponse, "description": "The admin routes are off (no admin_token configured)"},
}


async def require_admin(request: Request, token: Annotated[str | None, Security(_token_header)]) -> None:
    """Let the request through only with the configured admin token; 404 when none is configured."""
    expected = request.app.state.settings.admin_token
    if expected is None:
        raise HTTPException(status_code=404, detail="Not Found")
    if token is None or not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        log.warning("admin request to %s refused: missing or wrong %s", request.url.path, ADMIN_HEADER)
        raise HTTPException(status_code=401, detail=f"admin endpoints need a valid {ADMIN_HEADER} header")


AdminAuth = Depends(require_admin)
