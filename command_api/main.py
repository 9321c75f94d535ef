"""``command-api``: serve the command API with uvicorn."""

from __future__ import annotations

import uvicorn

from command_api.app import create_app
from runtime.logging import configure_logging
from runtime.settings import Settings


def main() -> None:
    """Console script entry point."""
    settings = Settings()
    configure_logging(settings.log_level, "command-api")
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.command_api_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
