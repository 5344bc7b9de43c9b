"""The one place where failures become JSON error responses."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from control_plane.data import DatasetError
from control_plane.storage import (
    InvalidRequestError,
    NotFoundError,
    StorageError,
    StorageUnavailableError,
    StoreIdConflictError,
)
from edge_agent.manifest import ManifestError
from edge_agent.reading import ReadingError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A failure with the HTTP status and message the client receives.

    Args:
        status: the HTTP status code.
        message: what failed and what the client should do instead.
        headers: extra response headers, e.g. ``WWW-Authenticate``.
    """

    def __init__(
        self, status: int, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class PayloadError(ApiError):
    """A request body that is not what the endpoint accepts; always a 400."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


# Our errors that carry a message meant for the client, with their status.
_CLIENT_ERRORS: tuple[tuple[type[Exception], int], ...] = (
    (ReadingError, 400),
    (DatasetError, 400),
    (InvalidRequestError, 400),
    (NotFoundError, 404),
    (StoreIdConflictError, 409),
    (StorageUnavailableError, 503),
)


def error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """Build the JSON body every error response has: ``{"error": message}``."""
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Turn exceptions into JSON error responses; never send a stack trace."""
    try:
        return await handler(request)
    except ApiError as exc:
        _log_client_error(request, exc.status, exc.message)
        return error_response(exc.status, exc.message, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = _http_exception_message(request, exc)
        _log_client_error(request, exc.status, message)
        headers = {
            name: exc.headers[name] for name in ("Allow",) if name in exc.headers
        }
        return error_response(exc.status, message, headers=headers)
    except ManifestError as exc:
        logger.error(
            "%s %s: model version unusable: %s", request.method, request.path, exc
        )
        return error_response(500, f"the model version cannot be used: {exc}")
    except StorageError as exc:
        status = next(
            (code for kind, code in _CLIENT_ERRORS if isinstance(exc, kind)), 500
        )
        if status >= 500:
            logger.error("%s %s failed: %s", request.method, request.path, exc)
        else:
            _log_client_error(request, status, str(exc))
        return error_response(status, str(exc))
    except (ReadingError, DatasetError) as exc:
        _log_client_error(request, 400, str(exc))
        return error_response(400, str(exc))
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return error_response(
            500, "internal error; the control plane log has the details"
        )


def _http_exception_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no endpoint at {request.path}; the API lives under /api/v1/"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"{request.method} is not allowed on {request.path}; use {allowed}"
    if exc.status == 413:
        return (
            f"request body is too large: {exc.text}; send smaller batches or "
            "smaller files"
        )
    return exc.text or exc.reason


def _log_client_error(request: web.Request, status: int, message: str) -> None:
    # Clients cause these; debug keeps a misbehaving client from flooding the log,
    # and the request metrics count them by status.
    logger.debug("%s %s -> %d: %s", request.method, request.path, status, message)
