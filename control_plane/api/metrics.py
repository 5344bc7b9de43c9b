"""Prometheus metrics of the API, kept in a registry per application."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram

_UNMATCHED_ROUTE = "unmatched"


class ApiMetrics:
    """The API's counters and histograms.

    A registry of its own per application keeps two apps in one process (as in
    tests) from registering the same metric names twice.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgepm_http_requests",
            "HTTP requests handled, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgepm_http_request_duration_seconds",
            "Time to handle an HTTP request, in seconds.",
            ["method", "route"],
            registry=self.registry,
        )
        self.ingest_rows = Counter(
            "edgepm_ingest_rows",
            "Records received by ingest, by table and outcome (inserted, duplicate).",
            ["table", "outcome"],
            registry=self.registry,
        )
        self.scored_rows = Counter(
            "edgepm_scored_rows",
            "Rows scored by the scoring endpoints, by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )


def metrics_middleware(metrics: ApiMetrics) -> Middleware:
    """Build the middleware that counts and times every request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        # The route's pattern, not the path, so a label has few values.
        route = _route_label(request)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.latency.labels(request.method, route).observe(
                time.perf_counter() - started
            )

    return middleware


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else _UNMATCHED_ROUTE
