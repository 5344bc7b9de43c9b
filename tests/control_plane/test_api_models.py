"""Model listing, manifests, artifact downloads and deployments over HTTP."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from control_plane.model_store import StoredVersion
from control_plane.registry import record_rejection
from control_plane.storage import open_storage
from tests.control_plane.api_server import ApiServer


def test_models_current_is_404_before_training(api: ApiServer) -> None:
    response = api.request("GET", "/api/v1/models/current")

    assert response.status == 404
    assert "edgepm-control-plane train" in response.json()["error"]


def test_models_list_shows_registered_version(
    registered_model: StoredVersion, api: ApiServer
) -> None:
    (model,) = api.request("GET", "/api/v1/models").json()["models"]

    assert model["version"] == 1
    assert model["status"] == "accepted"
    assert model["sha256"] == registered_model.manifest.sha256
    assert model["metrics"] == registered_model.document["metrics"]


def test_models_current_returns_manifest(
    registered_model: StoredVersion, api: ApiServer
) -> None:
    current = api.request("GET", "/api/v1/models/current?site=plant-a")
    by_version = api.request("GET", "/api/v1/models/1/manifest")

    assert current.status == 200
    assert current.json() == registered_model.document
    assert by_version.json() == registered_model.document


def test_models_artifact_matches_manifest_sha256(
    registered_model: StoredVersion, api: ApiServer
) -> None:
    response = api.request("GET", "/api/v1/models/1/artifact")

    expected = registered_model.manifest.sha256
    assert response.status == 200
    assert hashlib.sha256(response.body).hexdigest() == expected
    assert response.body == registered_model.artifact_path.read_bytes()
    assert response.headers["ETag"] == f'"{expected}"'
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_models_artifact_honours_if_none_match(
    registered_model: StoredVersion, api: ApiServer
) -> None:
    etag = f'"{registered_model.manifest.sha256}"'

    response = api.request(
        "GET", "/api/v1/models/1/artifact", headers={"If-None-Match": etag}
    )

    assert response.status == 304
    assert response.body == b""


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/v1/models/9/manifest", 404, "v9 is not recorded"),
        ("/api/v1/models/9/artifact", 404, "v9 is not recorded"),
        ("/api/v1/models/latest/manifest", 400, "not a model version"),
        ("/api/v1/models/current?site=bad%20site", 400, "not a site name"),
        (f"/api/v1/models/{'9' * 23}/artifact", 400, f"version='{'9' * 23}'"),
        (f"/api/v1/models/{2**31}/manifest", 400, f"version='{2**31}'"),
        ("/api/v1/models/%C2%B2/manifest", 400, "version='²'"),
        ("/api/v1/models/0/manifest", 400, "version='0'"),
    ],
)
def test_models_bad_requests_name_the_problem(
    api: ApiServer, path: str, status: int, message: str
) -> None:
    response = api.request("GET", path)

    assert response.status == status
    assert message in response.json()["error"]


def test_deployments_choose_site_version(
    registered_model: StoredVersion, api: ApiServer, database_url: str
) -> None:
    storage = open_storage(database_url)
    try:
        second = dataclasses.replace(registered_model, version=2)
        storage.record_model_version(
            dataclasses.replace(
                storage.get_model_version(1),
                version=2,
                manifest={**registered_model.document, "version": 2},
            )
        )
    finally:
        storage.close()
    assert second.version == 2

    fleet = api.request(
        "POST", "/api/v1/deployments", json_body={"version": 1, "scope": "*"}
    )
    site = api.request(
        "POST", "/api/v1/deployments", json_body={"version": 2, "scope": "plant-b"}
    )

    assert fleet.status == 201
    assert fleet.json()["deployment"]["scope"] == "*"
    assert site.json()["deployment"]["created_by"] == "anonymous"
    current_a = api.request("GET", "/api/v1/models/current?site=plant-a").json()
    current_b = api.request("GET", "/api/v1/models/current?site=plant-b").json()
    assert current_a["version"] == 1
    assert current_b["version"] == 2


def test_deployments_reject_unusable_versions(
    registered_model: StoredVersion, api: ApiServer, database_url: str
) -> None:
    storage = open_storage(database_url)
    try:
        record_rejection(storage, 2, "parity check failed")
    finally:
        storage.close()

    rejected = api.request(
        "POST", "/api/v1/deployments", json_body={"version": 2, "scope": "*"}
    )
    unknown = api.request(
        "POST", "/api/v1/deployments", json_body={"version": 5, "scope": "*"}
    )
    bad_scope = api.request(
        "POST", "/api/v1/deployments", json_body={"version": 1, "scope": "plant a"}
    )
    manifest = api.request("GET", "/api/v1/models/2/manifest")

    assert rejected.status == 400
    assert "only accepted versions" in rejected.json()["error"]
    assert unknown.status == 404
    assert bad_scope.status == 400
    assert "'scope'" in bad_scope.json()["error"]
    assert manifest.status == 404
    assert "parity check failed" in manifest.json()["error"]


@pytest.mark.parametrize("version", [2**31, 10**23])
def test_deployments_reject_version_out_of_range(
    registered_model: StoredVersion, api: ApiServer, version: int
) -> None:
    response = api.request(
        "POST", "/api/v1/deployments", json_body={"version": version, "scope": "*"}
    )

    assert response.status == 400
    assert f"'version' is {version}, above {2**31 - 1}" in response.json()["error"]
