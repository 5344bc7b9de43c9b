"""The agent's HTTP endpoints: /healthz, /readyz and Prometheus /metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from edge_agent.errors import SettingsError

logger = logging.getLogger(__name__)


def create_health_app(
    *,
    readiness: Callable[[], list[str]],
    registry: CollectorRegistry,
    agent_id: str,
) -> web.Application:
    """Build the aiohttp application.

    Args:
        readiness: returns the reasons the agent is not ready; empty when ready.
        registry: the agent's metrics registry.
        agent_id: reported by both health endpoints.
    """

    async def healthz(request: web.Request) -> web.Response:
        # The event loop handled this request, which is what "alive" means here.
        return web.json_response({"status": "alive", "agent_id": agent_id})

    async def readyz(request: web.Request) -> web.Response:
        reasons = readiness()
        if reasons:
            return web.json_response(
                {"status": "not ready", "agent_id": agent_id, "reasons": reasons},
                status=503,
            )
        return web.json_response({"status": "ready", "agent_id": agent_id})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    return app


async def start_health_server(
    app: web.Application, *, host: str, port: int
) -> web.AppRunner:
    """Serve ``app`` on host:port; clean up the returned runner to stop it.

    Raises:
        SettingsError: the port is taken or the host is not a local address.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SettingsError(
            f"cannot serve health and metrics on {host}:{port}: "
            f"{exc.strerror or exc}; set EDGEPM_HTTP_HOST and EDGEPM_HTTP_PORT to a "
            "free local address"
        ) from exc
    logger.info("health and metrics on http://%s:%d", host, port)
    return runner
