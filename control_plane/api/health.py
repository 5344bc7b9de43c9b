"""Liveness, readiness and metrics endpoints; open without a token."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from control_plane.api.errors import error_response
from control_plane.api.keys import METRICS, STORAGE
from control_plane.api.responses import json_response, run_blocking
from control_plane.storage import StorageError

logger = logging.getLogger(__name__)

# A readiness probe that hangs is worse than one that fails, so the database has
# this long to run SELECT 1.
READY_TIMEOUT_S = 5.0

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Return 200 while the process serves requests."""
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Return 200 when the database responds, else 503 with the reason."""
    storage = request.app[STORAGE]
    try:
        await asyncio.wait_for(
            run_blocking(request.app, storage.ping), timeout=READY_TIMEOUT_S
        )
    except TimeoutError:
        return error_response(
            503, f"{storage.description} did not answer within {READY_TIMEOUT_S} s"
        )
    except StorageError as exc:
        logger.warning("not ready: %s", exc)
        return error_response(503, str(exc))
    return json_response({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Serve the Prometheus metrics of this application."""
    handler = make_aiohttp_handler(request.app[METRICS].registry)
    response = await handler(request)
    assert isinstance(response, web.Response)
    return response
