"""The ingest, heartbeat and fleet endpoints over a real socket, on both backends."""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

import pytest

from tests.control_plane.api_server import ApiServer, serve_api
from tests.control_plane.factories import (
    batch_document,
    dump_tables,
    heartbeat_document,
)

OTHER_STORE_ID = "5d2f8a61-93c4-4b7e-a0d1-6e8f2c9b4a73"
EMPTY_COUNTS = {"readings": 0, "predictions": 0, "quarantine": 0, "alerts": 0}


def test_api_health_endpoints_answer(api: ApiServer) -> None:
    assert api.request("GET", "/healthz").json() == {"status": "ok"}
    assert api.request("GET", "/readyz").json() == {"status": "ready"}


def test_api_ingest_replay_is_idempotent(api: ApiServer, database_url: str) -> None:
    first = api.request("POST", "/api/v1/ingest", json_body=batch_document())
    before = dump_tables(database_url)

    replay = api.request("POST", "/api/v1/ingest", json_body=batch_document())

    assert first.status == 200
    assert first.json() == {
        "inserted": {"readings": 2, "predictions": 2, "quarantine": 1, "alerts": 1},
        "duplicates": EMPTY_COUNTS,
    }
    assert replay.status == 200
    assert replay.json() == {
        "inserted": EMPTY_COUNTS,
        "duplicates": {"readings": 2, "predictions": 2, "quarantine": 1, "alerts": 1},
    }
    assert dump_tables(database_url) == before
    assert len(before["readings"]) == 2


def _set(path: str, value: Any) -> Any:
    def change(document: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is KeyError:
            del target[leaf]
        else:
            target[leaf] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("store_id", KeyError), r"batch: field 'store_id' is missing"),
        (_set("store_id", "x"), r"'store_id' is 'x'; expected a UUID .*SQLite file"),
        (
            _set("store_id", "0b9d6f0e-store-1"),
            r"'store_id' is '0b9d6f0e-store-1'; expected a UUID",
        ),
        (
            _set("readingz", []),
            r"unknown field\(s\) 'readingz'; expected only agent_id, site, store_id, "
            r"readings, predictions, quarantine, alerts",
        ),
        (
            _set("readings.1.torque_nm", "42"),
            r"readings\[1\]: field 'torque_nm'.*number",
        ),
        (_set("readings.0.air_temperature_k", 25.0), r"readings\[0\].*Celsius"),
        (_set("readings.1.seq", 1), r"readings\[1\] repeats seq 1"),
        (_set("readings.0.ts", "2026-12-04 15:00"), r"readings\[0\].*UTC offset"),
        (
            _set("readings.0.ts", "9999-12-31T23:59:59-14:00"),
            r"readings\[0\].*outside the years 2000 to 2199",
        ),
        (
            _set("alerts.0.ts", "9999-12-31T23:59:59-14:00"),
            r"alerts\[0\].*within years 1 to 9999",
        ),
        (_set("predictions.1.failure_probability", 1.5), r"predictions\[1\].*0 to 1"),
        (_set("alerts.0.state", "on"), r"alerts\[0\]: field 'state'"),
        (_set("quarantine.0.size_bytes", -1), r"quarantine\[0\]: field 'size_bytes'"),
        (_set("readings", {"seq": 1}), r"field 'readings' is a JSON dict"),
        (
            _set("readings.0.site", "plant-b"),
            r"readings\[0\]: field 'site' is 'plant-b'",
        ),
    ],
)
def test_api_bad_batch_stores_nothing(
    api: ApiServer, database_url: str, change: Any, message: str
) -> None:
    document = copy.deepcopy(batch_document())
    change(document)

    response = api.request("POST", "/api/v1/ingest", json_body=document)

    assert response.status == 400
    assert re.search(message, response.json()["error"])
    assert all(rows == [] for rows in dump_tables(database_url).values())


def test_api_heartbeat_rejects_bad_store_id(api: ApiServer) -> None:
    response = api.request(
        "POST", "/api/v1/heartbeat", json_body=heartbeat_document(store_id="x")
    )

    assert response.status == 400
    assert "heartbeat: field 'store_id' is 'x'" in response.json()["error"]


def test_api_ingest_rejects_non_json(api: ApiServer) -> None:
    response = api.request(
        "POST",
        "/api/v1/ingest",
        body=b'{"agent_id": NaN}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status == 400
    assert "NaN" in response.json()["error"]


def test_api_store_id_change_conflicts(api: ApiServer, database_url: str) -> None:
    api.request("POST", "/api/v1/ingest", json_body=batch_document())
    before = dump_tables(database_url)

    response = api.request(
        "POST", "/api/v1/ingest", json_body=batch_document(store_id=OTHER_STORE_ID)
    )
    heartbeat = api.request(
        "POST",
        "/api/v1/heartbeat",
        json_body=heartbeat_document(store_id=OTHER_STORE_ID),
    )

    assert response.status == 409
    assert "local database was replaced" in response.json()["error"]
    assert heartbeat.status == 409
    assert dump_tables(database_url) == before


def test_api_heartbeat_lists_agent_up(api: ApiServer) -> None:
    response = api.request("POST", "/api/v1/heartbeat", json_body=heartbeat_document())

    (agent,) = api.request("GET", "/api/v1/agents").json()["agents"]
    assert response.status == 200
    assert agent["agent_id"] == "plant-a-agent"
    assert agent["status"] == "up"
    assert agent["model_version"] == 1
    assert agent["backlog"]["readings"] == 0
    assert agent["heartbeat_age_s"] >= 0


def test_api_stale_agent_listed_down(api_settings: Any) -> None:
    settings = dataclasses.replace(api_settings, agent_stale_s=1e-6)
    with serve_api(settings) as api:
        api.request("POST", "/api/v1/heartbeat", json_body=heartbeat_document())
        api.request(
            "POST", "/api/v1/ingest", json_body=batch_document(agent_id="silent-agent")
        )

        agents = api.request("GET", "/api/v1/agents").json()["agents"]

    assert {agent["agent_id"]: agent["status"] for agent in agents} == {
        "plant-a-agent": "down",
        "silent-agent": "down",
    }


def test_api_machines_show_latest_risk(api: ApiServer) -> None:
    api.request("POST", "/api/v1/ingest", json_body=batch_document())

    (machine,) = api.request("GET", "/api/v1/machines").json()["machines"]

    assert machine["machine_id"] == "m-001"
    assert machine["failure_probability"] == 0.81
    assert machine["risk_band"] == "high"
    assert machine["scored_reading_at"] == "2026-12-04T15:00:02.000+00:00"


def test_api_heartbeat_rejects_bad_counter(api: ApiServer) -> None:
    document = heartbeat_document()
    document["backlog"] = {"readings": "many"}

    response = api.request("POST", "/api/v1/heartbeat", json_body=document)

    assert response.status == 400
    assert "heartbeat.backlog: field 'readings'" in response.json()["error"]


def test_api_oversized_body_is_rejected(api: ApiServer) -> None:
    response = api.request(
        "POST",
        "/api/v1/heartbeat",
        body=b" " * (128 * 1024),
        headers={"Content-Type": "application/json"},
    )

    assert response.status == 413
    assert "over this endpoint's limit" in response.json()["error"]


def test_api_unknown_route_is_json_404(api: ApiServer) -> None:
    response = api.request("GET", "/api/v2/nothing")

    assert response.status == 404
    assert response.json() == {
        "error": "no endpoint at /api/v2/nothing; the API lives under /api/v1/"
    }


def test_api_wrong_method_is_json_405(api: ApiServer) -> None:
    response = api.request("GET", "/api/v1/ingest")

    assert response.status == 405
    assert "use POST" in response.json()["error"]


def test_api_metrics_count_ingest(api: ApiServer) -> None:
    api.request("POST", "/api/v1/ingest", json_body=batch_document())

    text = api.request("GET", "/metrics").body.decode()

    assert 'edgepm_ingest_rows_total{outcome="inserted",table="readings"} 2.0' in text
    assert 'route="/api/v1/ingest",status="200"' in text
    assert "edgepm_http_request_duration_seconds_bucket" in text
