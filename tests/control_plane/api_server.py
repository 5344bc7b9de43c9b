"""The control plane API served on a real loopback socket from a background thread.

Tests talk to it with plain blocking HTTP, the way an agent does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from control_plane.api import create_app
from control_plane.config import Settings

START_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class HttpResponse:
    """A response read whole."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class ApiServer:
    """A running API and a client for it."""

    base_url: str
    settings: Settings

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> HttpResponse:
        """Send one request and return the response, error statuses included."""
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.base_url + path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as reply:
                return HttpResponse(reply.status, dict(reply.headers), reply.read())
        except urllib.error.HTTPError as error:
            with error:
                return HttpResponse(error.code, dict(error.headers), error.read())


@contextmanager
def serve_api(settings: Settings) -> Iterator[ApiServer]:
    """Run the API on a free loopback port until the block exits."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    addresses: list[tuple[str, int]] = []
    failure: list[BaseException] = []
    stop = asyncio.Event()

    async def run() -> None:
        runner = web.AppRunner(create_app(settings))
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            addresses.extend(runner.addresses)
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            await runner.cleanup()
            return
        ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    thread = threading.Thread(
        target=loop.run_until_complete, args=(run(),), name="api-server", daemon=True
    )
    thread.start()
    try:
        if not ready.wait(START_TIMEOUT_S):
            raise TimeoutError(f"the API did not start within {START_TIMEOUT_S} s")
        if failure:
            raise failure[0]
        host, port = addresses[0][:2]
        yield ApiServer(f"http://{host}:{port}", settings)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=START_TIMEOUT_S)
        loop.close()
