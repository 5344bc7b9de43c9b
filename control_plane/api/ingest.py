"""Agent uploads: record batches and heartbeats."""

from __future__ import annotations

import logging

from aiohttp import web

from control_plane.api.keys import METRICS, STORAGE
from control_plane.api.payloads import (
    MAX_INGEST_BYTES,
    MAX_SMALL_BODY_BYTES,
    decode_json_object,
    parse_heartbeat,
    parse_ingest,
    read_body,
    read_json,
)
from control_plane.api.responses import json_response, run_blocking
from control_plane.storage.records import IngestBatch

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.post("/api/v1/ingest")
async def ingest(request: web.Request) -> web.Response:
    """Store a batch of an agent's records; 200 only after it is committed."""
    body = await read_body(request, max_bytes=MAX_INGEST_BYTES)
    # Decoding and checking 1,000 readings takes tens of milliseconds, too long to
    # hold the event loop, so it runs on the executor with the insert.
    batch = await run_blocking(request.app, _parse_ingest_body, body)

    result = await run_blocking(request.app, request.app[STORAGE].ingest, batch)

    metrics = request.app[METRICS]
    for table, count in result.inserted.items():
        metrics.ingest_rows.labels(table, "inserted").inc(count)
    for table, count in result.duplicates.items():
        metrics.ingest_rows.labels(table, "duplicate").inc(count)
    logger.debug(
        "agent %s (site %s): inserted %s, duplicates %s",
        batch.agent_id,
        batch.site,
        result.inserted,
        result.duplicates,
    )
    return json_response({"inserted": result.inserted, "duplicates": result.duplicates})


@routes.post("/api/v1/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    """Record an agent's status report and return the agent as stored."""
    report = parse_heartbeat(await read_json(request, max_bytes=MAX_SMALL_BODY_BYTES))

    agent = await run_blocking(
        request.app, request.app[STORAGE].record_heartbeat, report
    )

    logger.debug("heartbeat from agent %s (site %s)", agent.agent_id, agent.site)
    return json_response({"agent": agent})


def _parse_ingest_body(body: bytes) -> IngestBatch:
    return parse_ingest(decode_json_object(body))
