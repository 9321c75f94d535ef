"""``outbox-relay``: the relay process's composition root, for either relay.

``PREQUAL_RELAY=polling`` (default) publishes the outbox itself; ``debezium`` leaves the
publishing to Kafka Connect and runs the hand-over catch-up and the delivery confirmer.
"""

from __future__ import annotations

from outbox.cdc import CdcRelay, connector_check
from outbox.metrics import OutboxGauges
from outbox.relay import PollingRelay
from runtime.db import connect
from runtime.health import database_check
from runtime.kafka import kafka_check
from runtime.logging import configure_logging
from runtime.observability import Check, ObservabilityServer
from runtime.process import loop_liveness, stop_on_signals
from runtime.settings import RelayKind, Settings
from runtime.tracing import configure_tracing


def pending_and_age(settings: Settings) -> tuple[int, float]:
    """How many outbox rows are unpublished, and how old the oldest is (seconds)."""
    with connect(settings, "outbox-relay-metrics", autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(occurred_at)), 0)"
            " FROM outbox WHERE published_at IS NULL"
        ).fetchone()
    return (int(row[0]), float(row[1])) if row else (0, 0.0)


def main() -> None:
    """Console script entry point: relay until SIGTERM or SIGINT."""
    settings = Settings()
    configure_logging(settings.log_level, "outbox-relay")
    configure_tracing("outbox-relay")
    checks: dict[str, Check] = {
        "database": database_check(settings),
        "kafka": kafka_check(settings),
    }
    relay: PollingRelay | CdcRelay
    if settings.relay is RelayKind.DEBEZIUM:
        checks["debezium"] = connector_check(settings)
        relay = CdcRelay(settings)
    else:
        relay = PollingRelay(settings)
    OutboxGauges(lambda: pending_and_age(settings))
    stop = stop_on_signals()
    server = ObservabilityServer(
        settings.http_host,
        settings.relay_metrics_port,
        checks,
        settings.health_deadline_s,
        loop_liveness(stop, settings.liveness_stale_s),
    ).start()
    try:
        relay.run(stop)
    finally:
        server.stop()
