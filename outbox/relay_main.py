"""``outbox-relay``: the polling relay's composition root."""

from __future__ import annotations

from outbox.relay import PollingRelay
from runtime.health import database_check
from runtime.kafka import kafka_check
from runtime.logging import configure_logging
from runtime.observability import ObservabilityServer
from runtime.process import stop_on_signals
from runtime.settings import Settings


def main() -> None:
    """Console script entry point: relay until SIGTERM or SIGINT."""
    settings = Settings()
    configure_logging(settings.log_level, "outbox-relay")
    server = ObservabilityServer(
        settings.http_host,
        settings.relay_metrics_port,
        {"database": database_check(settings), "kafka": kafka_check(settings)},
    ).start()
    try:
        PollingRelay(settings).run(stop_on_signals())
    finally:
        server.stop()
