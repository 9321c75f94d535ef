"""``query-api``: serve the query api with uvicorn."""

from __future__ import annotations

from query_api.app import create_app
from runtime.logging import configure_logging
from runtime.serving import serve
from runtime.settings import Settings
from runtime.tracing import configure_tracing


def main() -> None:
    """Console script entry point."""
    settings = Settings()
    configure_logging(settings.log_level, "query-api")
    configure_tracing("query-api")
    serve(
        create_app(settings),
        settings.http_host,
        settings.query_api_port,
        settings.http_keep_alive_s,
    )
