"""``command-api``: serve the command API (uvicorn or granian), in one or several processes."""

from __future__ import annotations

from fastapi import FastAPI

from command_api.app import create_app
from runtime.logging import configure_logging
from runtime.serving import serve, serve_workers
from runtime.settings import Settings
from runtime.tracing import configure_tracing


def app_from_environment() -> FastAPI:
    """The app of one worker process: settings from the environment, logging and tracing set up."""
    settings = Settings()
    configure_logging(settings.log_level, "command-api")
    configure_tracing("command-api")
    return create_app(settings)


def main() -> None:
    """Console script entry point."""
    settings = Settings()
    configure_logging(settings.log_level, "command-api")
    # granian serves an importable factory only, in worker processes of its own.
    if settings.command_api_workers > 1 or settings.command_api_http_server == "granian":
        serve_workers(
            "command_api.main:app_from_environment",
            settings.http_host,
            settings.command_api_port,
            settings.command_api_workers,
            settings.http_keep_alive_s,
            settings.command_api_http_server,
        )
    else:
        # Several workers set up tracing each, in app_from_environment; the supervisor
        # serves no request.
        configure_tracing("command-api")
        serve(
            create_app(settings),
            settings.http_host,
            settings.command_api_port,
            settings.http_keep_alive_s,
        )
