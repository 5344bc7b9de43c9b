"""A minimal control plane on a real loopback socket, for the agent's uplink tests.

It implements only what the agent calls: ingest with the idempotency rule of
docs/protocol.md (records unique by agent and seq, predictions by agent, reading and
model version), the heartbeat, and the model download.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from edge_agent.manifest import ARTIFACT_FILE, MANIFEST_FILE

TABLES = ("readings", "predictions", "quarantine", "alerts")


class StubControlPlane:
    """Start it with ``await start()``, stop with ``await stop()``; restartable.

    Attributes:
        records: per table, the unique records kept, by their idempotency key.
        received: per table, every record received, duplicates included.
        heartbeats: every heartbeat body.
        authorization: the Authorization header of every request (None if absent).
        ingest_status: when set, ingest returns this status instead of storing.
        artifact_override: when set, served in place of the real ONNX bytes.
    """

    def __init__(self, port: int, *, model_dir: Path | None = None) -> None:
        self.port = port
        self.model_dir = model_dir
        self.records: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {
            table: {} for table in TABLES
        }
        self.received = dict.fromkeys(TABLES, 0)
        self.heartbeats: list[dict[str, Any]] = []
        self.authorization: list[str | None] = []
        self.ingest_status: int | None = None
        self.artifact_override: bytes | None = None
        self._store_ids: dict[str, str] = {}
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def unique(self, table: str) -> int:
        return len(self.records[table])

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/ingest", self._ingest)
        app.router.add_post("/api/v1/heartbeat", self._heartbeat)
        app.router.add_get("/api/v1/models/current", self._current_manifest)
        app.router.add_get("/api/v1/models/{version}/artifact", self._artifact)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _ingest(self, request: web.Request) -> web.Response:
        self.authorization.append(request.headers.get("Authorization"))
        body = await request.json()
        if self.ingest_status is not None:
            return web.Response(status=self.ingest_status, text="stub says no")
        agent = body["agent_id"]
        known_store = self._store_ids.setdefault(agent, body["store_id"])
        if known_store != body["store_id"]:
            return web.Response(
                status=409, text=f"agent {agent} has store {known_store}"
            )
        inserted = dict.fromkeys(TABLES, 0)
        for table in TABLES:
            for row in body.get(table, []):
                self.received[table] += 1
                if table == "predictions":
                    key = (agent, row["reading_seq"], row["model_version"])
                else:
                    key = (agent, row["seq"])
                if key not in self.records[table]:
                    self.records[table][key] = row
                    inserted[table] += 1
        return web.json_response({"inserted": inserted})

    async def _heartbeat(self, request: web.Request) -> web.Response:
        self.authorization.append(request.headers.get("Authorization"))
        self.heartbeats.append(await request.json())
        return web.json_response({"ok": True})

    async def _current_manifest(self, request: web.Request) -> web.Response:
        if self.model_dir is None:
            return web.Response(status=404, text="no model version is current")
        document = json.loads((self.model_dir / MANIFEST_FILE).read_text("utf-8"))
        return web.json_response(document)

    async def _artifact(self, request: web.Request) -> web.Response:
        if self.model_dir is None:
            return web.Response(status=404, text="no such version")
        if self.artifact_override is not None:
            return web.Response(body=self.artifact_override)
        return web.Response(body=(self.model_dir / ARTIFACT_FILE).read_bytes())
