"""Scoring on the control plane: one reading in real time, or a whole CSV file."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, cast

from aiohttp import BodyPartReader, web

from control_plane.api.errors import ApiError, PayloadError
from control_plane.api.keys import METRICS, SCORERS, SETTINGS, STORAGE
from control_plane.api.payloads import (
    parse_site,
    parse_version,
    read_json,
)
from control_plane.api.responses import json_response, run_blocking, stream_file
from control_plane.batch import score_csv
from control_plane.data import DatasetError
from edge_agent.reading import MAX_PAYLOAD_BYTES, validate_reading

logger = logging.getLogger(__name__)

UPLOAD_FIELD = "file"
_CHUNK_BYTES = 256 * 1024
_CSV_TYPES = ("text/csv", "application/csv", "application/octet-stream", "text/plain")

routes = web.RouteTableDef()


@routes.post("/api/v1/score")
async def score_reading(request: web.Request) -> web.Response:
    """Score one reading (the telemetry payload) with the site's current version."""
    document = await read_json(
        request,
        max_bytes=MAX_PAYLOAD_BYTES,
        subject="reading",
        fix="edge agents apply the same limit to MQTT payloads, so send only the "
        "fields of one reading",
    )
    reading = validate_reading(document)
    version = await _resolve_version(request, reading.site)
    scorer = await request.app[SCORERS].get(version)

    (prediction,) = await run_blocking(request.app, scorer.score, [reading])

    request.app[METRICS].scored_rows.labels("score").inc()
    return json_response(
        {
            "site": reading.site,
            "machine_id": reading.machine_id,
            "seq": reading.machine_seq,
            "ts": reading.ts,
            **dataclasses.asdict(prediction),
        }
    )


@routes.post("/api/v1/score/batch")
async def score_batch(request: web.Request) -> web.StreamResponse:
    """Score an uploaded CSV and return it with the model's output columns added.

    The body is the CSV itself (``text/csv``) or a multipart form with the file in
    the field ``file``. The upload goes to a temporary file under the size limit
    and is removed with the result once the response is sent.
    """
    site = parse_site(request.query.get("site"))
    version = await _resolve_version(request, site)
    directory = Path(
        await run_blocking(request.app, tempfile.mkdtemp, prefix="edgepm-batch-")
    )
    try:
        source = directory / "upload.csv"
        await _receive_upload(request, source)
        scorer = await request.app[SCORERS].get(version)
        destination = directory / "scored.csv"
        try:
            summary = await run_blocking(
                request.app, score_csv, source, destination, scorer
            )
        except DatasetError as exc:
            # The message names the temporary path; the client knows its file.
            raise PayloadError(str(exc).replace(str(source), "upload")) from exc

        request.app[METRICS].scored_rows.labels("batch").inc(summary.rows)
        handle = await run_blocking(request.app, _open_binary, destination, "rb")
        try:
            return await stream_file(
                request,
                handle,
                headers={
                    "Content-Type": "text/csv; charset=utf-8",
                    "Content-Disposition": 'attachment; filename="scored.csv"',
                    "X-Model-Version": str(summary.model_version),
                    "X-Rows-Scored": str(summary.rows),
                },
            )
        finally:
            handle.close()
    finally:
        await run_blocking(request.app, shutil.rmtree, directory, ignore_errors=True)


async def _resolve_version(request: web.Request, site: str | None) -> int:
    requested = parse_version(request.query.get("version"))
    if requested is not None:
        return requested
    version = await run_blocking(
        request.app, request.app[STORAGE].current_version, site
    )
    if version is None:
        raise ApiError(
            404,
            "no model version is accepted yet; train one with "
            "edgepm-control-plane train",
        )
    return version


async def _receive_upload(request: web.Request, destination: Path) -> None:
    limit = request.app[SETTINGS].max_upload_bytes
    if request.content_length is not None and request.content_length > limit + 65536:
        raise _upload_too_large(request.content_length, limit)
    handle = await run_blocking(request.app, _open_binary, destination, "wb")
    try:
        if request.content_type == "multipart/form-data":
            written = await _copy_multipart(request, handle, limit)
        elif request.content_type in _CSV_TYPES:
            written = await _copy_chunks(
                request, request.content.iter_chunked(_CHUNK_BYTES), handle, limit
            )
        else:
            raise ApiError(
                415,
                f"Content-Type {request.content_type!r} is not a CSV upload; send "
                f"the file as text/csv or as the multipart form field "
                f"{UPLOAD_FIELD!r}",
            )
    finally:
        handle.close()
    if written == 0:
        raise PayloadError("the upload is empty; send a CSV file with a header row")


async def _copy_multipart(request: web.Request, handle: BinaryIO, limit: int) -> int:
    reader = await request.multipart()
    async for part in reader:
        if isinstance(part, BodyPartReader) and part.name == UPLOAD_FIELD:
            return await _copy_chunks(request, _part_chunks(part), handle, limit)
    raise PayloadError(
        f"the multipart form has no field {UPLOAD_FIELD!r}; put the CSV file in it"
    )


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK_BYTES):
        yield chunk


async def _copy_chunks(
    request: web.Request, chunks: AsyncIterator[bytes], handle: BinaryIO, limit: int
) -> int:
    written = 0
    async for chunk in chunks:
        written += len(chunk)
        if written > limit:
            raise _upload_too_large(written, limit)
        await run_blocking(request.app, handle.write, chunk)
    return written


def _open_binary(path: Path, mode: str) -> BinaryIO:
    return cast(BinaryIO, path.open(mode))


def _upload_too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"the upload is over {size} bytes, above the limit of {limit // (1024 * 1024)} "
        "MiB set by EDGEPM_MAX_UPLOAD_MB; split the file or raise the limit",
    )
