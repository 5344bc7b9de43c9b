"""The control plane's HTTP API as an aiohttp application.

``create_app`` wires the middlewares (metrics, errors, authentication, in that order
from the outside in), the routes and the resources the handlers share.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from control_plane.api import fleet, health, ingest, models, scoring
from control_plane.api.auth import auth_middleware
from control_plane.api.errors import error_middleware
from control_plane.api.keys import EXECUTOR, METRICS, SCORERS, SETTINGS, STORAGE
from control_plane.api.metrics import ApiMetrics, metrics_middleware
from control_plane.api.payloads import MAX_INGEST_BYTES
from control_plane.api.scorers import ScorerCache
from control_plane.config import Settings
from control_plane.listen import open_listening_socket
from control_plane.storage import open_storage

logger = logging.getLogger(__name__)

# Threads for database queries, scoring and file copies. SQLite runs one statement
# at a time anyway; PostgreSQL's pool has four connections.
EXECUTOR_THREADS = 4


def create_app(settings: Settings) -> web.Application:
    """Build the API application; the database opens when the app starts.

    Args:
        settings: the control plane's configuration.
    """
    metrics = ApiMetrics()
    app = web.Application(
        middlewares=[metrics_middleware(metrics), error_middleware, auth_middleware],
        # The limit for bodies read whole; ingest and uploads set their own.
        client_max_size=MAX_INGEST_BYTES,
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app.cleanup_ctx.append(_shared_resources)
    for module in (health, ingest, fleet, models, scoring):
        app.add_routes(module.routes)
    return app


async def _shared_resources(app: web.Application) -> AsyncIterator[None]:
    """Open the executor, the database and the scorer cache; close them in reverse."""
    settings = app[SETTINGS]
    executor = ThreadPoolExecutor(
        max_workers=EXECUTOR_THREADS, thread_name_prefix="edgepm-api"
    )
    loop = asyncio.get_running_loop()
    try:
        storage = await loop.run_in_executor(
            executor, open_storage, settings.database_url
        )
        try:
            version = await loop.run_in_executor(executor, storage.migrate)
            app[EXECUTOR] = executor
            app[STORAGE] = storage
            app[SCORERS] = ScorerCache(storage=storage, executor=executor)
            if settings.api_token is None:
                logger.warning(
                    "EDGEPM_API_TOKEN is not set: the API accepts requests without "
                    "authentication; set a token for any deployment beyond loopback"
                )
            logger.info("API started on %s (schema v%d)", storage.description, version)
            yield
        finally:
            await loop.run_in_executor(executor, storage.close)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        logger.info("API stopped")


def run_api(settings: Settings) -> None:
    """Serve the API on the configured host and port until SIGINT or SIGTERM.

    Raises:
        ListenError: the host and port cannot be bound.
    """
    sock = open_listening_socket(
        settings.http_host,
        settings.http_port,
        host_variable="EDGEPM_HTTP_HOST",
        port_variable="EDGEPM_HTTP_PORT",
    )
    logger.info(
        "serving the API on http://%s:%d", settings.http_host, settings.http_port
    )
    web.run_app(create_app(settings), sock=sock, print=None, shutdown_timeout=10.0)
