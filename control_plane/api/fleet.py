"""Read-only views of the fleet: agents with their status, machines by risk."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from control_plane.api.keys import SETTINGS, STORAGE
from control_plane.api.responses import json_response, run_blocking
from control_plane.storage import utc_now

routes = web.RouteTableDef()


@routes.get("/api/v1/agents")
async def list_agents(request: web.Request) -> web.Response:
    """List every agent with ``status`` up or down from its last heartbeat's age."""
    agents = await run_blocking(request.app, request.app[STORAGE].list_agents)
    now = utc_now()
    stale_s = request.app[SETTINGS].agent_stale_s
    return json_response(
        {
            "stale_after_s": stale_s,
            "agents": [
                {
                    **dataclasses.asdict(agent),
                    "status": "up" if agent.is_up(now, stale_s) else "down",
                    "heartbeat_age_s": agent.heartbeat_age_s(now),
                }
                for agent in agents
            ],
        }
    )


@routes.get("/api/v1/machines")
async def list_machines(request: web.Request) -> web.Response:
    """List every machine with its latest prediction, highest risk first."""
    machines = await run_blocking(request.app, request.app[STORAGE].list_machine_risk)
    return json_response({"machines": machines})
