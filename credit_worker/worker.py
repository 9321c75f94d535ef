"""The credit worker: consume submitted applications, produce credit reports, exactly once.

Each batch is one Kafka transaction (:mod:`credit_worker.transactions`) carrying the
credit reports (and any dead letters) and the consumed offsets. The worker has no
database; the score is a pure function of the event, so a re-run produces the same
report with the same event id.

Each batch is traced (:mod:`messaging.tracing`): a ``credit-worker batch`` span per
transaction, and per message a ``process`` span continuing the submitted event's trace
with a ``send`` span under it whose context the report carries in its ``traceparent``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from functools import partial

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from credit_worker.report import credit_report
from credit_worker.single_node import SingleNodeRecovery
from credit_worker.transactions import (
    GroupOffsets,
    Output,
    Recovery,
    State,
    TransactionLoop,
)
from messaging.dead_letter import dead_letter_headers
from messaging.headers import event_headers
from messaging.metrics import CONSUMED, HANDLE_SECONDS, LagReporter
from messaging.tracing import ConsumedBatch
from runtime.kafka import consumer_config, ensure_topics, next_batch, position_of, producer_config
from runtime.logging import get_logger
from runtime.process import Backoff
from runtime.settings import Settings
from schema.events import SubmittedEvent, UndecodableEvent, decode_event

NAME = "credit-worker"
_log = get_logger(__name__)


def recovery_for(settings: Settings) -> Recovery:
    """The cluster's standard recovery, or the single development broker's checked one.

    ``PREQUAL_KAFKA_BROKERS=3``: :class:`GroupOffsets`. ``=1``:
    :class:`credit_worker.single_node.SingleNodeRecovery`, for anomalies only the
    single node shows (docs/architecture.md, "The credit worker").
    """
    if settings.kafka_brokers == 1:
        return SingleNodeRecovery(settings)
    return GroupOffsets(settings.kafka_transaction_timeout_ms / 1000)


class CreditWorker:
    """Consumes submitted applications and produces their credit reports transactionally.

    ``recovery`` says where to resume after a failed transaction (default:
    :func:`recovery_for` the settings' Kafka backend).
    """

    def __init__(self, settings: Settings, recovery: Recovery | None = None) -> None:
        self._settings = settings
        self._timeout_s = settings.kafka_transaction_timeout_ms / 1000
        self._recovery = recovery or recovery_for(settings)
        self.assigned: list[TopicPartition] = []

    @property
    def transactional_id(self) -> str:
        """Stable per instance, so a restarted worker fences its predecessor's transaction."""
        return f"prequal-{NAME}-{self._settings.instance_id}"

    def require_assignment(self) -> None:
        """Health check: raise unless the group gave this worker partitions."""
        if not self.assigned:
            raise RuntimeError(f"{NAME} has no partitions assigned")

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; the batch in flight is committed or aborted first."""
        settings = self._settings
        ensure_topics(
            settings, [settings.topic_submitted, settings.topic_credit_reports, settings.topic_dlq]
        )
        lag = LagReporter(NAME).config(settings)
        consumer = Consumer(consumer_config(settings, settings.group_credit_worker, **lag))
        loop = TransactionLoop(
            consumer=consumer,
            new_producer=self.new_producer,
            recovery=self._recovery,
            timeout_s=self._timeout_s,
            stop=stop,
            name=NAME,
        )

        def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.assigned = list(partitions)
            loop.assigned(partitions)
            _log.info(
                "credit_worker.assigned",
                partitions=[f"{p.topic}[{p.partition}]" for p in partitions],
            )

        def on_revoke(_consumer: Consumer, _partitions: list[TopicPartition]) -> None:
            self.assigned = []

        consumer.subscribe([settings.topic_submitted], on_assign=on_assign, on_revoke=on_revoke)
        # Built before the loop so that a configuration error stops the process at once.
        self.new_producer()
        _log.info("credit_worker.started", transactional_id=self.transactional_id)
        backoff = Backoff()
        try:
            while not stop.is_set():
                if loop.state is not State.READY:
                    if not loop.recover():
                        stop.wait(backoff.next())
                    continue
                messages = next_batch(
                    consumer,
                    settings.consumer_batch_size,
                    linger_s=settings.credit_worker_commit_interval_ms / 1000,
                )
                if loop.state is not State.READY:
                    continue  # a rebalance during the poll asked for a rewind
                batch = [m for m in messages if m.error() is None]
                for message in messages:
                    if message.error() is not None:
                        _log.warning("credit_worker.kafka_error", error=str(message.error()))
                if not batch:
                    continue
                started = time.perf_counter()
                with ConsumedBatch(NAME, settings.group_credit_worker, batch) as spans:
                    outputs = loop.transact(batch, partial(self._outputs, spans=spans))
                    if outputs is None:
                        spans.fail("transaction failed")
                if outputs is None:
                    stop.wait(backoff.next())
                    continue
                backoff.reset()
                HANDLE_SECONDS.labels(NAME).observe(time.perf_counter() - started)
                dead = sum(o.dead_letter for o in outputs)
                CONSUMED.labels(NAME, "applied").inc(len(outputs) - dead)
                if dead:
                    CONSUMED.labels(NAME, "dead_lettered").inc(dead)
        finally:
            consumer.close()
            _log.info("credit_worker.stopped")

    def new_producer(self) -> Producer:
        """A transactional producer with this worker's ``transactional.id``, not initialised."""
        return Producer(
            producer_config(
                self._settings,
                **{
                    "transactional.id": self.transactional_id,
                    "transaction.timeout.ms": self._settings.kafka_transaction_timeout_ms,
                    "message.timeout.ms": self._settings.kafka_transaction_timeout_ms,
                    # Back-to-back transactions: until the previous commit's markers are
                    # written the coordinator answers CONCURRENT_TRANSACTIONS and
                    # librdkafka retries after retry.backoff.ms — 100 ms by default,
                    # which was the p99 of this stage (docs/benchmarks.md).
                    "retry.backoff.ms": 5,
                },
            )
        )

    def _outputs(self, batch: list[Message], spans: ConsumedBatch) -> list[Output]:
        """Each input's credit report, or its dead letter if it is not a submitted event."""
        now = datetime.now(UTC)
        return [self._output(message, now, spans) for message in batch]

    def _output(self, message: Message, now: datetime, spans: ConsumedBatch) -> Output:
        source = position_of(message)
        try:
            event = decode_event(message.value())
            if not isinstance(event, SubmittedEvent):
                raise UndecodableEvent(f"credit worker does not handle {event.event_type.value}")
        except UndecodableEvent as error:
            _log.warning(
                "credit_worker.dead_lettered",
                topic=message.topic(),
                partition=message.partition(),
                offset=message.offset(),
                reason=str(error),
            )
            spans.dead_lettered(message)
            return Output(
                source,
                self._settings.topic_dlq,
                message.key(),
                message.value(),
                dead_letter_headers(message, NAME, str(error)),
                dead_letter=True,
            )
        report = credit_report(event, now)
        topic = self._settings.topic_credit_reports
        return Output(
            source,
            topic,
            str(report.aggregate_id).encode(),
            report.model_dump_json().encode(),
            event_headers(
                report.event_id,
                report.event_type.value,
                report.correlation_id,
                report.causation_id,
                # The report's send span, child of this message's span (tracing off: the
                # submitted event's own traceparent): the application's trace goes on.
                spans.send(message, topic, report.event_id),
            ),
        )
