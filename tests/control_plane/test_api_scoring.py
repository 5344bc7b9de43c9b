"""The scoring endpoints against the session's real ONNX model."""

from __future__ import annotations

import csv
import dataclasses
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.config import Settings
from control_plane.model_store import StoredVersion
from edge_agent.reading import MAX_PAYLOAD_BYTES, validate_reading
from edge_agent.scorer import OnnxScorer
from tests.control_plane.api_server import ApiServer, serve_api

READING = {
    "site": "plant-a",
    "machine_id": "m-001",
    "ts": "2026-12-04T15:00:00.123+00:00",
    "seq": 17,
    "product_type": "L",
    "air_temperature_k": 298.9,
    "process_temperature_k": 309.1,
    "rotational_speed_rpm": 1410.0,
    "torque_nm": 65.7,
    "tool_wear_min": 191.0,
}
OUTPUT_COLUMNS = ["failure_probability", "failure_label", "risk_band", "failure_type"]


@pytest.fixture
def scoring_api(
    registered_model: StoredVersion, sqlite_settings: Settings
) -> Iterator[ApiServer]:
    """The API on SQLite with version 1 registered, a 1 MiB upload limit."""
    settings = dataclasses.replace(sqlite_settings, max_upload_mb=1)
    with serve_api(settings) as server:
        yield server


@pytest.fixture
def database_url(sqlite_settings: Settings) -> str:
    """Scoring does not depend on the backend, so these tests use SQLite only."""
    return sqlite_settings.database_url


def test_score_reading_equals_onnx_scorer(
    scoring_api: ApiServer, model_dir: Path
) -> None:
    (expected,) = OnnxScorer(model_dir).score([validate_reading(READING)])

    response = scoring_api.request("POST", "/api/v1/score", json_body=READING)

    body = response.json()
    assert response.status == 200
    assert body["model_version"] == 1
    assert body["failure_probability"] == expected.failure_probability
    assert body["failure_label"] == expected.failure_label
    assert body["risk_band"] == expected.risk_band
    assert body["failure_type"] == expected.failure_type
    assert body["failure_type_probability"] == expected.failure_type_probability
    assert (body["machine_id"], body["seq"]) == ("m-001", 17)


def test_score_reading_rejects_invalid_field(scoring_api: ApiServer) -> None:
    response = scoring_api.request(
        "POST", "/api/v1/score", json_body={**READING, "torque_nm": -5}
    )

    assert response.status == 400
    assert "field 'torque_nm'" in response.json()["error"]


def test_score_reading_too_large_is_413(scoring_api: ApiServer) -> None:
    response = scoring_api.request(
        "POST",
        "/api/v1/score",
        json_body={**READING, "padding": "x" * MAX_PAYLOAD_BYTES},
    )

    message = response.json()["error"]
    assert response.status == 413
    assert message.startswith("reading is too large: ")
    assert f"limit of {MAX_PAYLOAD_BYTES} bytes" in message
    assert "batches" not in message


def test_score_reading_unknown_version_is_404(scoring_api: ApiServer) -> None:
    response = scoring_api.request("POST", "/api/v1/score?version=7", json_body=READING)

    assert response.status == 404
    assert "v7 is not recorded" in response.json()["error"]


def _csv_upload(rows: int) -> bytes:
    lines = [
        "Type,Air temperature [K],Process temperature [K],Rotational speed [rpm],"
        "Torque [Nm],Tool wear [min]"
    ]
    for index in range(rows):
        lines.append(
            f"{'LMH'[index % 3]},298.1,308.6,{1400 + index},{40 + index % 30},"
            f"{index % 240}"
        )
    return ("\n".join(lines) + "\n").encode()


def test_score_batch_adds_output_columns(
    scoring_api: ApiServer, model_dir: Path
) -> None:
    upload = _csv_upload(50)

    response = scoring_api.request(
        "POST", "/api/v1/score/batch", body=upload, headers={"Content-Type": "text/csv"}
    )

    assert response.status == 200
    assert response.headers["X-Rows-Scored"] == "50"
    rows = list(csv.DictReader(io.StringIO(response.body.decode())))
    assert len(rows) == 50
    assert list(rows[0])[-4:] == OUTPUT_COLUMNS
    scorer = OnnxScorer(model_dir)
    first = validate_reading(
        {
            **READING,
            "product_type": "L",
            "air_temperature_k": 298.1,
            "process_temperature_k": 308.6,
            "rotational_speed_rpm": 1400.0,
            "torque_nm": 40.0,
            "tool_wear_min": 0.0,
        }
    )
    (expected,) = scorer.score([first])
    assert float(rows[0]["failure_probability"]) == pytest.approx(
        expected.failure_probability, abs=1e-6
    )
    assert rows[0]["risk_band"] == expected.risk_band


def test_score_batch_accepts_multipart_field(scoring_api: ApiServer) -> None:
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="machines.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + _csv_upload(5)
        + f"\r\n--{boundary}--\r\n".encode()
    )

    response = scoring_api.request(
        "POST",
        "/api/v1/score/batch",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )

    assert response.status == 200
    rows = list(csv.DictReader(io.StringIO(response.body.decode())))
    assert len(rows) == 5


def test_score_batch_bad_row_is_400(scoring_api: ApiServer) -> None:
    lines = _csv_upload(5).decode().splitlines()
    lines[3] = "M,298.1,308.6,fast,40,3"

    response = scoring_api.request(
        "POST",
        "/api/v1/score/batch",
        body=("\n".join(lines) + "\n").encode(),
        headers={"Content-Type": "text/csv"},
    )

    message = response.json()["error"]
    assert response.status == 400
    assert "Rotational speed" in message or "rotational_speed_rpm" in message
    assert "edgepm-batch-" not in message


def test_score_batch_missing_column_is_400(scoring_api: ApiServer) -> None:
    response = scoring_api.request(
        "POST",
        "/api/v1/score/batch",
        body=b"Type,Torque [Nm]\nM,40\n",
        headers={"Content-Type": "text/csv"},
    )

    assert response.status == 400
    assert "upload" in response.json()["error"]


def test_score_batch_over_limit_is_413(scoring_api: ApiServer) -> None:
    response = scoring_api.request(
        "POST",
        "/api/v1/score/batch",
        body=_csv_upload(40_000),
        headers={"Content-Type": "text/csv"},
    )

    assert response.status == 413
    assert "EDGEPM_MAX_UPLOAD_MB" in response.json()["error"]


def test_score_batch_rejects_other_content_type(scoring_api: ApiServer) -> None:
    response = scoring_api.request(
        "POST",
        "/api/v1/score/batch",
        body=b"{}",
        headers={"Content-Type": "application/json"},
    )

    assert response.status == 415
    assert "text/csv" in response.json()["error"]
