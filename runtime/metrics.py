"""The APIs' Prometheus metrics: the request series and ``GET /metrics``.

:class:`~runtime.middleware.RequestContextMiddleware` counts every answer in
:data:`HTTP_REQUESTS` and times it in :data:`HTTP_SECONDS`; :data:`router` serves them
with the rest of the process's registry (every worker's, when uvicorn runs several).
The loop processes serve their registry from :mod:`runtime.observability` instead.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

#: The variable prometheus_client's multiprocess mode reads: the directory where each
#: worker process writes its series (set by :func:`runtime.serving.serve_workers`).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter(
    "prequal_http_requests_total",
    "HTTP requests answered, by service, route template, method and status.",
    ["service", "route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "prequal_http_request_duration_seconds",
    "Time to answer an HTTP request, by service and route template.",
    ["service", "route", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """The Prometheus text exposition of this process (of every worker under uvicorn's)."""
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


def _registry() -> CollectorRegistry:
    """The metrics of this process, or of every worker when uvicorn runs several."""
    if MULTIPROC_ENV not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
