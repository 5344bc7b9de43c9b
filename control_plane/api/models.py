"""Model versions: listing, manifests, artifact downloads and deployments."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from control_plane.api.errors import ApiError
from control_plane.api.keys import PRINCIPAL, STORAGE
from control_plane.api.payloads import (
    MAX_SMALL_BODY_BYTES,
    parse_deployment,
    parse_site,
    parse_version,
    read_json,
)
from control_plane.api.responses import json_response, run_blocking, stream_file
from control_plane.storage.records import ModelVersion
from edge_agent.manifest import ARTIFACT_FILE

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.get("/api/v1/models")
async def list_models(request: web.Request) -> web.Response:
    """List every version with its status and metrics, newest first."""
    models = await run_blocking(request.app, request.app[STORAGE].list_model_versions)
    return json_response(
        {
            "models": [
                {
                    "version": model.version,
                    "created_at": model.created_at,
                    "status": model.status,
                    "sha256": model.sha256,
                    "metrics": model.metrics,
                    "rejection_reason": model.rejection_reason,
                }
                for model in models
            ]
        }
    )


@routes.get("/api/v1/models/current")
async def current_manifest(request: web.Request) -> web.Response:
    """Return the manifest of the version a site (or the fleet) should run."""
    site = parse_site(request.query.get("site"))
    storage = request.app[STORAGE]
    version = await run_blocking(request.app, storage.current_version, site)
    if version is None:
        raise ApiError(
            404,
            "no model version is accepted yet; train one with "
            "edgepm-control-plane train",
        )
    model = await run_blocking(request.app, storage.get_model_version, version)
    return json_response(_manifest_of(model))


@routes.get("/api/v1/models/{version}/manifest")
async def version_manifest(request: web.Request) -> web.Response:
    """Return one version's manifest."""
    model = await _accepted_model(request)
    return json_response(_manifest_of(model))


@routes.get("/api/v1/models/{version}/artifact")
async def version_artifact(request: web.Request) -> web.StreamResponse:
    """Stream one version's ONNX artifact with its sha256 as the ETag."""
    model = await _accepted_model(request)
    etag = f'"{model.sha256}"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    path = Path(str(model.path)) / ARTIFACT_FILE
    try:
        handle = await run_blocking(request.app, path.open, "rb")
    except OSError as exc:
        logger.error("model v%d artifact unreadable: %s", model.version, exc)
        raise ApiError(
            500, f"model v{model.version} artifact is missing from the model store"
        ) from exc

    # NOTE: the bytes are served as stored, without hashing them again; the
    # agent's loader compares them with the manifest's sha256 before use.
    headers = {
        "ETag": etag,
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="model-v{model.version}.onnx"',
    }
    try:
        return await stream_file(request, handle, headers=headers)
    finally:
        handle.close()


@routes.post("/api/v1/deployments")
async def create_deployment(request: web.Request) -> web.Response:
    """Deploy an accepted version to a site or, with scope ``*``, the fleet."""
    version, scope = parse_deployment(
        await read_json(request, max_bytes=MAX_SMALL_BODY_BYTES)
    )
    deployment = await run_blocking(
        request.app,
        request.app[STORAGE].add_deployment,
        version,
        scope,
        created_by=request.get(PRINCIPAL, "anonymous"),
    )
    return json_response({"deployment": deployment}, status=201)


async def _accepted_model(request: web.Request) -> ModelVersion:
    version = parse_version(request.match_info["version"])
    assert version is not None
    model = await run_blocking(
        request.app, request.app[STORAGE].get_model_version, version
    )
    if model.status != "accepted" or model.manifest is None:
        raise ApiError(
            404,
            f"model v{version} was rejected ({model.rejection_reason}); it has no "
            "artifact to serve",
        )
    return model


def _manifest_of(model: ModelVersion) -> dict[str, object]:
    assert model.manifest is not None
    return model.manifest
