"""``credit-worker``: the credit worker's composition root."""

from __future__ import annotations

from credit_worker.worker import NAME, CreditWorker
from runtime.kafka import kafka_check
from runtime.logging import configure_logging
from runtime.observability import ObservabilityServer
from runtime.process import loop_liveness, stop_on_signals
from runtime.settings import Settings
from runtime.tracing import configure_tracing


def main() -> None:
    """Console script entry point: score until SIGTERM or SIGINT."""
    settings = Settings()
    configure_logging(settings.log_level, NAME)
    configure_tracing(NAME)
    worker = CreditWorker(settings)
    stop = stop_on_signals()
    server = ObservabilityServer(
        settings.http_host,
        settings.credit_worker_metrics_port,
        {"consumer": worker.require_assignment, "kafka": kafka_check(settings)},
        settings.health_deadline_s,
        loop_liveness(stop, settings.liveness_stale_s),
    ).start()
    try:
        worker.run(stop)
    finally:
        server.stop()
