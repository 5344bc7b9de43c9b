"""Bearer token authentication of the API."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from control_plane.config import Settings
from tests.control_plane.api_server import ApiServer, serve_api
from tests.control_plane.factories import heartbeat_document

TOKEN = "5f2b8c1e9d7a4e3f"


@pytest.fixture
def guarded_api(sqlite_settings: Settings) -> Iterator[ApiServer]:
    """The API on SQLite with a bearer token required."""
    with serve_api(dataclasses.replace(sqlite_settings, api_token=TOKEN)) as server:
        yield server


def test_auth_missing_token_is_401(guarded_api: ApiServer) -> None:
    response = guarded_api.request("GET", "/api/v1/agents")

    assert response.status == 401
    assert "missing bearer token" in response.json()["error"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="edgepm"'


@pytest.mark.parametrize(
    "header", ["Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer"]
)
def test_auth_wrong_credentials_are_401(guarded_api: ApiServer, header: str) -> None:
    response = guarded_api.request(
        "GET", "/api/v1/agents", headers={"Authorization": header}
    )

    assert response.status == 401
    assert "EDGEPM_API_TOKEN" in response.json()["error"]


def test_auth_valid_token_is_accepted(guarded_api: ApiServer) -> None:
    heartbeat = guarded_api.request(
        "POST", "/api/v1/heartbeat", json_body=heartbeat_document(), token=TOKEN
    )
    agents = guarded_api.request("GET", "/api/v1/agents", token=TOKEN)

    assert heartbeat.status == 200
    assert agents.status == 200
    assert len(agents.json()["agents"]) == 1


def test_auth_rejected_write_stores_nothing(guarded_api: ApiServer) -> None:
    guarded_api.request("POST", "/api/v1/heartbeat", json_body=heartbeat_document())

    agents = guarded_api.request("GET", "/api/v1/agents", token=TOKEN)

    assert agents.json()["agents"] == []


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_auth_health_and_metrics_stay_open(guarded_api: ApiServer, path: str) -> None:
    assert guarded_api.request("GET", path).status == 200


def test_auth_open_api_logs_warning(
    sqlite_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level("WARNING", logger="control_plane.api.app"),
        serve_api(sqlite_settings) as api,
    ):
        assert api.request("GET", "/api/v1/agents").status == 200

    assert "EDGEPM_API_TOKEN is not set" in caplog.text
