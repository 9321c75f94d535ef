"""The original design, for the benchmark's baseline: commit, then publish inline.

The request stores the application exactly as ours does but without the outbox row;
after the commit it produces the event through one long-lived idempotent acks=all
producer and waits for the delivery report before answering 202. That is what the
original design did (and why it loses events when Kafka is down: the row is committed,
the publish fails, nothing retries it). It exists only to be measured beside the outbox.

Run with ``python -m bench.baseline_api`` and the usual ``PREQUAL_*`` settings; it
serves on ``PREQUAL_COMMAND_API_PORT``.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from confluent_kafka import KafkaError, Message, Producer
from fastapi import FastAPI

from command_api.app import create_app
from command_api.group_commit import numbered_parameters
from command_api.models import ApplicationRequest
from command_api.submit import (
    Accepted,
    SubmitApplication,
    SubmitContext,
    store_applications_ctes,
)
from messaging.headers import event_headers
from outbox.append import OutboxMessage
from runtime.db import create_engine, database_errors
from runtime.deadline import Budget
from runtime.errors import DependencyUnavailable
from runtime.kafka import producer_config
from runtime.logging import configure_logging
from runtime.rate_limit import RateLimiter
from runtime.serving import serve, serve_workers
from runtime.settings import Settings

# The application and projection rows exactly as ours stores them; no outbox row. One
# statement per request: the original design had no group commit either.
_STORE_WITHOUT_OUTBOX = store_applications_ctes(1) + "SELECT 1"


class InlinePublishSubmit(SubmitApplication):
    """Submit that commits first and then waits for Kafka to acknowledge the event."""

    def __init__(self, settings: Settings, producer: Producer) -> None:
        engine = create_engine(settings, "bench-baseline")
        # The same per-client rate limit as ours (one statement per request): the two
        # sides differ only in how the event leaves, not in what else a request pays.
        limiter = RateLimiter(
            engine, settings.db_deadline_s, settings.rate_limit_per_s, settings.rate_limit_burst
        )
        super().__init__(
            engine,
            settings.topic_submitted,
            timedelta(seconds=settings.idempotency_key_ttl_s),
            deadline_s=settings.db_deadline_s,
            limiter=limiter,
        )
        self._producer = producer

    async def store(
        self, request: ApplicationRequest, ctx: SubmitContext, budget: Budget
    ) -> Accepted:
        """Commit the application (no outbox row), then publish its event and await Kafka.

        The same one-round-trip storage as ours, minus the outbox row and the grouping:
        the original design's shape, measured fairly.
        """
        message, row = self.row(request, ctx)
        async with database_errors(), self._engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql(_STORE_WITHOUT_OUTBOX, numbered_parameters([row]))
        await self._publish(message)
        return Accepted(message.envelope.aggregate_id)

    async def _publish(self, message: OutboxMessage) -> None:
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                loop.call_soon_threadsafe(_resolve, delivered, None)
            else:
                loop.call_soon_threadsafe(_resolve, delivered, error.str())

        env = message.envelope
        self._producer.produce(
            message.topic,
            value=env.model_dump_json().encode(),
            key=str(env.aggregate_id).encode(),
            headers=event_headers(
                env.event_id,
                env.event_type.value,
                env.correlation_id,
                env.causation_id,
                message.traceparent,
            ),
            on_delivery=on_delivery,
        )
        await delivered


def _resolve(future: asyncio.Future[None], error: str | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(DependencyUnavailable("kafka"))


def _serve_delivery_reports(producer: Producer, stop: threading.Event) -> None:
    while not stop.is_set():
        producer.poll(0.05)


def create_baseline_app(settings: Settings) -> tuple[FastAPI, threading.Event]:
    """The command API with the inline-publish submit; set the event to stop its poller."""
    producer = Producer(producer_config(settings))
    stop = threading.Event()
    threading.Thread(
        target=_serve_delivery_reports, args=(producer, stop), name="delivery-reports", daemon=True
    ).start()
    app = create_app(settings)
    app.state.submit = InlinePublishSubmit(settings, producer)
    return app, stop


def app_from_environment() -> FastAPI:
    """One worker's baseline app (its own producer and delivery-report thread)."""
    settings = Settings()
    configure_logging(settings.log_level, "bench-baseline")
    app, _stop = create_baseline_app(settings)
    return app


def main() -> None:
    """Serve the baseline on the command API's port, with as many workers, until SIGTERM."""
    settings = Settings()
    configure_logging(settings.log_level, "bench-baseline")
    if settings.command_api_workers > 1:
        serve_workers(
            "bench.baseline_api:app_from_environment",
            settings.http_host,
            settings.command_api_port,
            settings.command_api_workers,
            settings.http_keep_alive_s,
        )
        return
    app, stop = create_baseline_app(settings)
    try:
        serve(app, settings.http_host, settings.command_api_port, settings.http_keep_alive_s)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
