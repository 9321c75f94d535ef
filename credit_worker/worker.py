"""The credit worker's loop: consume, score, produce — exactly once within Kafka.

Each batch is one Kafka transaction carrying the credit reports (and any dead letters)
*and* the consumed offsets (``send_offsets_to_transaction``). Either all of it becomes
visible to ``read_committed`` readers, or none of it does and the batch is consumed
again. The worker has no database; the score is a pure function of the event, so a
re-run produces the same report with the same event id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from credit_worker.ledger import CommitLedger
from credit_worker.report import credit_report
from outbox.dead_letter import dead_letter_headers
from outbox.headers import TRACEPARENT, event_headers, header_value
from outbox.metrics import CONSUMED, HANDLE_SECONDS, RETRIES, LagReporter
from runtime.kafka import (
    Position,
    UnreadablePositions,
    consumer_config,
    ensure_topics,
    first_offsets,
    next_batch,
    next_offsets,
    position_of,
    producer_config,
    visible_positions,
)
from runtime.logging import get_logger
from runtime.process import Backoff
from runtime.settings import Settings
from schema.events import SubmittedEvent, UndecodableEvent, decode_event

NAME = "credit-worker"
_log = get_logger(__name__)


class CreditWorker:
    """Consumes submitted applications and produces their credit reports transactionally."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout_s = settings.kafka_transaction_timeout_ms / 1000
        self._producer: Producer | None = None
        self._resync = False
        self._failed_resyncs = 0
        # What this process committed, to check the group's offsets against.
        self._ledger = CommitLedger()
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
        consumer.subscribe(
            [settings.topic_submitted], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        # Created before the loop so that a configuration error stops the process at once.
        self._current_producer()
        _log.info("credit_worker.started", transactional_id=self.transactional_id)
        backoff = Backoff()
        try:
            while not stop.is_set():
                if self._resync:
                    if not self._resync_positions(consumer):
                        stop.wait(backoff.next())
                    continue
                messages = next_batch(
                    consumer,
                    settings.consumer_batch_size,
                    linger_s=settings.consumer_batch_linger_ms / 1000,
                )
                if self._resync:
                    # A rebalance during the poll handed back partitions this process
                    # committed on: what was fetched from the group's offsets is dropped,
                    # and the resync seeks to the checked positions.
                    continue
                batch = [m for m in messages if m.error() is None]
                for message in messages:
                    if message.error() is not None:
                        _log.warning("credit_worker.kafka_error", error=str(message.error()))
                if not batch:
                    continue
                if self._transact(consumer, batch, stop):
                    backoff.reset()
                else:
                    stop.wait(backoff.next())
        finally:
            consumer.close()
            _log.info("credit_worker.stopped")

    def _resync_positions(self, consumer: Consumer) -> bool:
        """Seek every assigned partition to where its next batch starts; False to retry.

        The new producer fences the abandoned one; its ``init_transactions`` waits until
        the coordinator has completed or aborted that transaction, so the committed
        offsets read after it include the batch if it was committed.
        """
        try:
            self._current_producer()
            positions = self._resume_positions(consumer, consumer.assignment())
        except KafkaException as error:
            _log.warning("credit_worker.resync_failed", error=str(error))
            self._failed_resyncs += 1
            if self._failed_resyncs >= 2:
                # The offset fetch was also seen to time out for as long as it was tried,
                # waiting on group offsets of a transaction whose marker the broker had
                # skipped (see _abort_left_open), so what is left open is ended too.
                try:
                    self._abort_left_open(consumer, set())
                except KafkaException as abort_error:
                    _log.info("credit_worker.abort_left_open_failed", error=str(abort_error))
            # A rebalance the consumer owes the group (its session expired during the
            # outage) is only served by a poll, and until then the offset fetch was seen
            # to time out, attempt after attempt. What the poll returns is dropped: the
            # seek below sets every position again.
            consumer.poll(0)
            return False
        self._failed_resyncs = 0
        for position in positions:
            try:
                consumer.seek(position)
            except KafkaException as seek_error:
                # The partition moved to another member, which resumes from the group's
                # committed offset.
                _log.info("credit_worker.seek_skipped", error=str(seek_error))
        self._resync = False
        _log.info(
            "credit_worker.resynced",
            positions=[f"{p.topic}[{p.partition}]@{p.offset}" for p in positions],
        )
        return True

    def _resume_positions(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> list[TopicPartition]:
        """The group's committed offsets, checked against this process's own commits.

        Where the group is behind what this process committed, the output topic decides
        (:mod:`credit_worker.ledger`): resume at the first input whose report is not
        visible, and skip the later ones whose reports are.
        """
        if not partitions:
            return []
        committed = consumer.committed(partitions, timeout=self._timeout_s)
        positions = []
        for position in committed:
            offset = position.offset
            dispute = self._ledger.dispute(position)
            if dispute is not None:
                outputs = {o for o in dispute.outputs.values() if o is not None}
                visible = self._visible(consumer, outputs)
                offset = self._ledger.settle(dispute, visible)
                _log.warning(
                    "credit_worker.stale_committed_offset",
                    partition=f"{position.topic}[{position.partition}]",
                    group_says=position.offset,
                    committed_here=dispute.committed_here,
                    reports_visible=len(visible),
                    resume_at=offset,
                )
            positions.append(
                TopicPartition(
                    position.topic, position.partition, offset if offset >= 0 else OFFSET_BEGINNING
                )
            )
        return positions

    def _visible(self, consumer: Consumer, outputs: set[Position]) -> set[Position]:
        """Which of this process's outputs ``read_committed`` readers see.

        If a transaction left open blocks the way, it is aborted first
        (:meth:`_abort_left_open`) and the outputs are read again.
        """
        try:
            return visible_positions(self._settings, outputs, self._timeout_s)
        except UnreadablePositions as blocked:
            self._abort_left_open(consumer, blocked.partitions)
            return visible_positions(self._settings, outputs, self._timeout_s)

    def _abort_left_open(self, consumer: Consumer, partitions: set[tuple[str, int]]) -> None:
        """End, as aborted, whatever this transactional id left open.

        Kafka 4.3.1 was seen to complete a transaction without writing its markers to
        some of its partitions, when their leader was offline as the single broker
        stopped or started ("Couldn't find leader endpoint ... likely deleted already and
        hence can be skipped"). On an output partition the records stay open, and every
        ``read_committed`` reader there stops in front of them. On the group's offsets
        partition the offsets stay pending, and the offset fetch waits on them. Both last
        until the next marker of the same producer id.

        So this runs a transaction that writes one record to each of ``partitions``,
        adds the group's offsets, and aborts. Its abort markers close everything the
        producer id left open there. Aborted records and offsets are never read or
        applied, so nothing of it is seen. If the transaction was in fact still being
        committed, the coordinator finishes that first (the new one cannot start
        before), and nothing of it is undone.
        """
        offsets = self._ledger.partitions()
        if not partitions and not offsets:
            return
        _log.warning(
            "credit_worker.aborting_open_transaction",
            partitions=[f"{topic}[{partition}]" for topic, partition in sorted(partitions)],
            offsets=[f"{p.topic}[{p.partition}]" for p in offsets],
        )
        producer = self._current_producer()
        try:
            producer.begin_transaction()
            for topic, partition in sorted(partitions):
                producer.produce(topic, partition=partition, value=None, headers=_FENCE_HEADERS)
            if producer.flush(self._timeout_s):
                raise KafkaException(
                    KafkaError(KafkaError._TIMED_OUT, "the fencing record was not delivered")
                )
            if offsets:
                metadata = consumer.consumer_group_metadata()
                try:
                    _with_deadline(
                        lambda: producer.send_offsets_to_transaction(
                            offsets, metadata, self._timeout_s
                        ),
                        self._timeout_s + 5,
                    )
                except StuckCall:
                    raise
                except KafkaException as error:
                    # The offsets partition joins the transaction before the group
                    # answers, so the abort below may close what was left open there all
                    # the same; if not, the next attempt tries again.
                    _log.info("credit_worker.abort_offsets_refused", error=str(error))
            _with_deadline(lambda: producer.abort_transaction(self._timeout_s), self._timeout_s + 5)
        except KafkaException:
            # The next resync starts over with a new producer, which aborts this one.
            self._producer = None
            raise

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(self._ledger.knows(p.topic, p.partition) for p in partitions):
            # Back on partitions this process committed on: a stale offset from the
            # coordinator would replay or skip a batch, so the positions are checked
            # (the resync) before anything is consumed.
            self._resync = True
        self.assigned = list(partitions)
        _log.info(
            "credit_worker.assigned", partitions=[f"{p.topic}[{p.partition}]" for p in partitions]
        )

    def _on_revoke(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self.assigned = []

    def _current_producer(self) -> Producer:
        if self._producer is None:
            producer = Producer(
                producer_config(
                    self._settings,
                    **{
                        "transactional.id": self.transactional_id,
                        "transaction.timeout.ms": self._settings.kafka_transaction_timeout_ms,
                        "message.timeout.ms": self._settings.kafka_transaction_timeout_ms,
                        # Back-to-back transactions: until the previous commit's markers
                        # are written the coordinator answers CONCURRENT_TRANSACTIONS and
                        # librdkafka retries after retry.backoff.ms — 100 ms by default,
                        # which was the p99 of this stage (docs/benchmarks.md).
                        "retry.backoff.ms": 5,
                    },
                )
            )
            producer.init_transactions(self._timeout_s)
            self._producer = producer
        return self._producer

    def _transact(self, consumer: Consumer, batch: list[Message], stop: threading.Event) -> bool:
        """One transaction for ``batch``; on failure rewind to its start and return False."""
        started = time.perf_counter()
        try:
            producer = self._current_producer()
            producer.begin_transaction()
            outputs: dict[Position, Position] = {}
            produced, dead = self._produce_all(producer, batch, outputs)
            offsets = next_offsets(batch)
            metadata = consumer.consumer_group_metadata()
            _with_deadline(
                lambda: producer.send_offsets_to_transaction(offsets, metadata, self._timeout_s),
                self._timeout_s + 5,
            )
            # Nothing is committed before this call, so any failure above simply aborts.
            _retrying(
                lambda: _with_deadline(
                    lambda: producer.commit_transaction(self._timeout_s), self._timeout_s + 5
                ),
                stop,
            )
            # Delivery reports were served by the commit's flush; a poll serves any left.
            producer.poll(0)
            self._ledger.record(offsets, outputs)
            self._ledger.consumed(position_of(m) for m in batch)
        except StuckCall as stuck:
            # The call is still blocked inside librdkafka: leave that producer alone.
            self._producer = None
            self._abandon(stuck.error, batch)
            return False
        except KafkaException as error:
            self._abandon(error.args[0] if error.args else None, batch)
            return False
        HANDLE_SECONDS.labels(NAME).observe(time.perf_counter() - started)
        CONSUMED.labels(NAME, "applied").inc(produced)
        if dead:
            CONSUMED.labels(NAME, "dead_lettered").inc(dead)
        return True

    def _produce_all(
        self, producer: Producer, batch: list[Message], outputs: dict[Position, Position]
    ) -> tuple[int, int]:
        """Produce each input's report or dead letter; ``outputs`` gets where each went."""
        produced = dead = 0
        now = datetime.now(UTC)
        for message in batch:
            source = position_of(message)
            if self._ledger.already_reported(source):
                continue
            delivered = partial(_delivered, outputs, source)
            try:
                event = decode_event(message.value())
                if not isinstance(event, SubmittedEvent):
                    raise UndecodableEvent(
                        f"credit worker does not handle {event.event_type.value}"
                    )
            except UndecodableEvent as error:
                _log.warning(
                    "credit_worker.dead_lettered",
                    topic=message.topic(),
                    partition=message.partition(),
                    offset=message.offset(),
                    reason=str(error),
                )
                producer.produce(
                    self._settings.topic_dlq,
                    value=message.value(),
                    key=message.key(),
                    headers=dead_letter_headers(message, NAME, str(error)),
                    on_delivery=delivered,
                )
                dead += 1
                continue
            report = credit_report(event, now)
            producer.produce(
                self._settings.topic_credit_reports,
                value=report.model_dump_json().encode(),
                key=str(report.aggregate_id).encode(),
                headers=event_headers(
                    report.event_id,
                    report.event_type.value,
                    report.correlation_id,
                    report.causation_id,
                    header_value(message.headers(), TRACEPARENT),
                ),
                on_delivery=delivered,
            )
            produced += 1
        return produced, dead

    def _abandon(self, error: KafkaError | None, batch: list[Message]) -> None:
        """Abort, replace the producer, and resume from the group's committed offsets.

        Rewinding to the batch start would be wrong when the failure was only the
        client's view: a commit that timed out while the broker was away may still
        complete on the coordinator, and reprocessing the batch would then commit every
        report twice (the broker-outage test caught exactly that). So the positions are
        resynchronised (:meth:`_resync_positions`) after the new producer's
        ``init_transactions``, which returns only once the old transaction is committed
        or aborted.

        A producer that has just failed a transaction is not reused: after a broker outage
        librdkafka (2.x) was seen to block in ``send_offsets_to_transaction`` well past its
        timeout on the reused handle. A new producer with the same ``transactional.id``
        fences the old one and starts from a clean state; this costs one
        ``init_transactions`` per failure, nothing on the happy path.
        """
        RETRIES.labels(NAME).inc()
        _log.warning(
            "credit_worker.transaction_failed",
            error=str(error),
            messages=len(batch),
            first=[f"{p.topic}[{p.partition}]@{p.offset}" for p in first_offsets(batch)],
        )
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                if error is None or not error.fatal():
                    _with_deadline(
                        lambda: producer.abort_transaction(self._timeout_s), self._timeout_s + 5
                    )
            except KafkaException as abort_error:
                _log.info("credit_worker.abort_failed", error=str(abort_error))
            producer.purge(in_queue=True, in_flight=True, blocking=False)
        # Where to resume is decided once the coordinator has finished this transaction.
        self._resync = True


# On the record an aborted transaction writes to end what was left open (never read).
_FENCE_HEADERS: list[tuple[str, str | bytes | None]] = [
    ("prequal_fence", b"closes a transaction left open")
]


def _delivered(
    outputs: dict[Position, Position], source: Position, error: KafkaError | None, sent: Message
) -> None:
    """Delivery report: note where the output of input ``source`` landed."""
    if error is None:
        outputs[source] = position_of(sent)


class StuckCall(KafkaException):
    """A transactional call did not return within its deadline (librdkafka#5456, #5511)."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(error)
        self.error = error


def _with_deadline(operation: Callable[[], None], deadline_s: float) -> None:
    """Run a blocking librdkafka call, giving up on it after ``deadline_s``.

    librdkafka 2.x can block in ``send_offsets_to_transaction`` (and the calls after it)
    far past the timeout it was given when the group coordinator's broker went away
    (confluentinc/librdkafka#5456 and #5511, open). Seen here when the one broker
    restarted under load: the worker hung until killed. The call runs in a daemon thread;
    if it does not return in time the worker abandons that producer (the thread keeps it
    alive until librdkafka lets go) and carries on with a new one, which fences it.
    """
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def call() -> None:
        try:
            operation()
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)
        finally:
            done.set()

    threading.Thread(target=call, name="kafka-transaction-call", daemon=True).start()
    if not done.wait(deadline_s):
        raise StuckCall(
            KafkaError(KafkaError._TIMED_OUT, f"transactional call stuck for {deadline_s:.0f} s")
        )
    if outcome[0] is not None:
        raise outcome[0]


def _retrying(operation: Callable[[], None], stop: threading.Event) -> None:
    """Run the commit, repeating it while Kafka calls its failure retriable.

    A commit that timed out may still have succeeded on the coordinator: aborting then
    would be wrong, so a retriable failure is retried (as librdkafka prescribes) until it
    succeeds, needs an abort, or the worker is stopping.
    """
    backoff = Backoff()
    while True:
        try:
            operation()
            return
        except KafkaException as error:
            kafka_error = error.args[0] if error.args else None
            if stop.is_set() or not (
                isinstance(kafka_error, KafkaError) and kafka_error.retriable()
            ):
                raise
            RETRIES.labels(NAME).inc()
            _log.warning("credit_worker.retrying_transaction_step", error=str(kafka_error))
            stop.wait(backoff.next())
