"""JSON rendering of storage records, and the executor hop for blocking calls."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from control_plane.api.keys import EXECUTOR

T = TypeVar("T")


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Render data with datetimes as ISO 8601 and dataclasses as objects."""
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


def dumps(data: Any) -> str:
    """Serialize data as compact JSON; see ``json_response``."""
    return json.dumps(data, default=_encode, separators=(",", ":"), allow_nan=False)


def record_document(record: Any) -> dict[str, Any]:
    """Return a dataclass record as a dict, ready for ``dumps``."""
    return dataclasses.asdict(record)


async def run_blocking(
    app: web.Application, function: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Run a blocking call on the API's executor and wait for its result.

    Database queries, onnxruntime and file copies go here so the event loop keeps
    serving other requests meanwhile.
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(function, *args, **kwargs)
    return await loop.run_in_executor(app[EXECUTOR], call)


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


async def stream_file(
    request: web.Request,
    handle: Any,
    *,
    headers: dict[str, str],
    chunk_bytes: int = 256 * 1024,
) -> web.StreamResponse:
    """Send an open binary file as the response body, reading it off the loop.

    The caller keeps ownership of the handle and closes it afterwards, so the file
    may live in a temporary directory that the caller removes.
    """
    response = web.StreamResponse(headers=headers)
    status = await run_blocking(request.app, os.fstat, handle.fileno())
    response.content_length = status.st_size
    await response.prepare(request)
    while chunk := await run_blocking(request.app, handle.read, chunk_bytes):
        await response.write(chunk)
    await response.write_eof()
    return response
