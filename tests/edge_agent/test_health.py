"""Health endpoints: /healthz, /readyz flipping with model and broker, /metrics."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge_agent.agent import Agent
from tests.conftest import Broker, free_port
from tests.edge_agent.control_plane_stub import StubControlPlane
from tests.edge_agent.harness import TIMEOUT_S, make_settings, running


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def wait_for_status(
    http: aiohttp.ClientSession, url: str, status: int
) -> tuple[int, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_S
    while True:
        try:
            answer = await get(http, url)
        except aiohttp.ClientConnectionError:
            answer = (0, None)
        if answer[0] == status or loop.time() > deadline:
            return answer
        await asyncio.sleep(0.05)


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_health_readiness_follows_model_and_broker(
    tmp_path: Path, mosquitto: Broker, model_dir: Path
) -> None:
    control_plane = StubControlPlane(free_port(), model_dir=model_dir)
    settings = make_settings(
        tmp_path, mosquitto, control_plane_url=control_plane.base_url
    )
    base = f"http://127.0.0.1:{settings.http_port}"

    async with (
        running(Agent(settings), ready=False) as agent,
        aiohttp.ClientSession() as http,
    ):
        alive = await wait_for_status(http, f"{base}/healthz", 200)
        no_model = await get(http, f"{base}/readyz")

        await control_plane.start()  # the agent downloads the model
        ready = await wait_for_status(http, f"{base}/readyz", 200)

        await asyncio.to_thread(mosquitto.stop)
        broker_down = await wait_for_status(http, f"{base}/readyz", 503)

        await asyncio.to_thread(mosquitto.start)
        ready_again = await wait_for_status(http, f"{base}/readyz", 200)
        metrics = await get(http, f"{base}/metrics")
        readiness = agent.readiness()
    await control_plane.stop()

    assert alive[0] == 200
    assert alive[1]["agent_id"] == "plant-a-agent"
    assert no_model[0] == 503
    assert "no model loaded" in no_model[1]["reasons"]
    assert ready[0] == 200
    assert broker_down[0] == 503
    assert any("not connected" in reason for reason in broker_down[1]["reasons"])
    assert ready_again[0] == 200
    assert readiness == []
    assert metrics[0] == 200
    assert "edgepm_agent_model_version 1.0" in metrics[1]
    assert "edgepm_agent_readings_stored_total 0.0" in metrics[1]
    assert (settings.model_path / "active").read_text() == "v1\n"


@pytest.mark.asyncio
async def test_health_server_port_in_use_names_setting() -> None:
    from aiohttp import web

    from edge_agent.errors import SettingsError
    from edge_agent.health import start_health_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(
            SettingsError, match="set EDGEPM_HTTP_HOST and EDGEPM_HTTP_PORT"
        ):
            await start_health_server(web.Application(), host="127.0.0.1", port=port)
