"""Serving an API: :func:`serve` in this process (uvicorn), :func:`serve_workers` in one or several.

:func:`serve_workers` runs uvicorn (uvloop, httptools) or granian (Rust, hyper) on the
same ASGI app; ``Settings.command_api_http_server`` chooses, and docs/benchmarks.md
measures them side by side.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server as Granian

from runtime.metrics import MULTIPROC_ENV

#: Seconds a stopping server lets requests finish (uvicorn then cancels the rest).
_GRACEFUL_STOP_S = 10
#: granian kills a worker that has not stopped by then, lifespan shutdown included
#: (closing the pools, flushing spans): the requests' time and a margin for that.
_GRANIAN_KILL_S = _GRACEFUL_STOP_S + 5

# Our middleware writes the request log, not uvicorn.
_UVICORN: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "timeout_graceful_shutdown": _GRACEFUL_STOP_S,
}


#: granian's own log lines go to the root logger, as JSON lines (runtime/logging.py);
#: its access log stays off, as uvicorn's: our middleware writes the request log.
_GRANIAN_LOGS: dict[str, Any] = {
    "loggers": {
        "_granian": {"handlers": [], "propagate": True},
        "granian.access": {"handlers": [], "propagate": False},
    }
}


def serve_workers(
    factory: str,
    host: str,
    port: int,
    workers: int,
    keep_alive_s: int,
    server: Literal["uvicorn", "granian"] = "uvicorn",
) -> None:
    """Serve the app built by ``factory`` ("module:function") in ``workers`` processes.

    ``keep_alive_s``: seconds an idle client connection stays open
    (``Settings.http_keep_alive_s``). ``server``: which HTTP server runs the app
    (``Settings.command_api_http_server``).

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
        if server == "granian":
            _granian(factory, host, port, workers, keep_alive_s)
            return
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


def _granian(factory: str, host: str, port: int, workers: int, keep_alive_s: int) -> None:
    # HTTP/1.1 only, as uvicorn: the clients and load balancers in front speak it. hyper's
    # header read timeout also bounds an idle kept-alive connection's wait for its next
    # request, so it stands for uvicorn's keep-alive timeout. Workers are spawned, fresh
    # interpreters as uvicorn's: forked ones would inherit the supervisor's metrics, made
    # at import before PROMETHEUS_MULTIPROC_DIR was set, and never write them to the files.
    multiprocessing.set_start_method("spawn", force=True)
    # Its own lines at the level our configure_logging gave the root logger (granian
    # would log at INFO whatever PREQUAL_LOG_LEVEL says); a worker that dies is started
    # again, as uvicorn does, instead of stopping the whole server.
    level = LogLevels(logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower())
    Granian(
        factory,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=workers,
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=keep_alive_s * 1000),
        workers_kill_timeout=_GRANIAN_KILL_S,
        respawn_failed_workers=True,
        log_level=level,
        log_dictconfig=_GRANIAN_LOGS,
    ).serve()


def serve(app: FastAPI, host: str, port: int, keep_alive_s: int) -> None:
    """Serve ``app`` with uvicorn; our middleware writes the request log, not uvicorn.

    ``keep_alive_s``: seconds an idle client connection stays open
    (``Settings.http_keep_alive_s``).
    """
    uvicorn.run(app, host=host, port=port, timeout_keep_alive=keep_alive_s, **_UVICORN)
