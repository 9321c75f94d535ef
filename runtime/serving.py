"""Serving an API with uvicorn: :func:`serve` in this process, :func:`serve_workers` in several."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import uvicorn
from fastapi import FastAPI

from runtime.metrics import MULTIPROC_ENV

# Our middleware writes the request log, not uvicorn; a stop lets requests finish for 10 s.
_UVICORN: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "timeout_graceful_shutdown": 10,
}


def serve_workers(factory: str, host: str, port: int, workers: int, keep_alive_s: int) -> None:
    """Serve the app built by ``factory`` ("module:function") in ``workers`` processes.

    ``keep_alive_s``: seconds an idle client connection stays open
    (``Settings.http_keep_alive_s``).

    One Python process is bound to one core; several workers share the port. Each
    worker keeps its metrics in files under ``PROMETHEUS_MULTIPROC_DIR`` (a fresh
    directory, unless the environment names one) and ``/metrics`` sums them, whichever
    worker answers the scrape.
    """
    created = None
    if MULTIPROC_ENV not in os.environ:
        created = tempfile.mkdtemp(prefix="prequal-metrics-")
        os.environ[MULTIPROC_ENV] = created
    try:
        uvicorn.run(
            factory,
            factory=True,
            workers=workers,
            host=host,
            port=port,
            timeout_keep_alive=keep_alive_s,
            **_UVICORN,
        )
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


def serve(app: FastAPI, host: str, port: int, keep_alive_s: int) -> None:
    """Serve ``app`` with uvicorn; our middleware writes the request log, not uvicorn.

    ``keep_alive_s``: seconds an idle client connection stays open
    (``Settings.http_keep_alive_s``).
    """
    uvicorn.run(app, host=host, port=port, timeout_keep_alive=keep_alive_s, **_UVICORN)
