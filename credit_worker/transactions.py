"""The consume-transform-produce loop (KIP-447) as one small state machine.

Each batch is one Kafka transaction carrying the batch's outputs *and* its consumed
offsets (``send_offsets_to_transaction``): ``read_committed`` readers see all of it or
none of it, and a batch whose transaction is aborted is consumed again.

States (:class:`State`):

``NO_PRODUCER``
    No transactional producer. A new one calls ``init_transactions``, which fences any
    predecessor with the same ``transactional.id`` and waits until the coordinator has
    completed or aborted the transaction that one left open. Then ``REWIND``.
``REWIND``
    The consumer's positions are not to be trusted (after an abort, a new producer, or
    an assignment the recovery wants checked). Every assigned partition is sought to
    where :class:`Recovery` says: on a cluster, the group's committed offsets, which a
    ``read_committed`` consumer fetches stable (KIP-447). Then ``READY``.
``READY``
    The next batch's transaction may run.

A failed transaction, by librdkafka's classification of its error:

* *retriable*, in the commit: the commit is called again. It may have succeeded on the
  coordinator, so aborting would be wrong.
* *fatal*, or a call stuck past its deadline (:mod:`credit_worker.deadline`): the
  producer is dropped, ``NO_PRODUCER``.
* anything else (*abortable*): ``abort_transaction`` and ``REWIND``, with the same
  producer; if the abort fails too, ``NO_PRODUCER``.

A failure while recovering starts the recovery over from a new producer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from credit_worker.deadline import StuckCall, call_with_deadline
from messaging.metrics import RETRIES
from runtime.kafka import Position, first_offsets, next_offsets, position_of
from runtime.logging import get_logger
from runtime.process import Backoff

_log = get_logger(__name__)

Headers = list[tuple[str, str | bytes | None]]

# How far past its own timeout a transactional call may run before it is abandoned.
STUCK_MARGIN_S = 5.0


class State(Enum):
    """Where the loop stands; see the module docstring."""

    NO_PRODUCER = "no_producer"
    REWIND = "rewind"
    READY = "ready"


@dataclass(frozen=True)
class Output:
    """One record a transaction produces for the input at ``source``."""

    source: Position
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    dead_letter: bool = False


class TransactionalProducer(Protocol):
    """The part of ``confluent_kafka.Producer`` the loop uses (timeouts in seconds)."""

    def init_transactions(self, timeout: float) -> None:
        """Fence predecessors with the same ``transactional.id``; once per producer."""

    def begin_transaction(self) -> None:
        """Start a transaction (local: no request)."""

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        """Queue one record of the transaction."""

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: object, timeout: float
    ) -> None:
        """Add the consumed ``positions`` (next offsets) to the transaction."""

    def commit_transaction(self, timeout: float) -> None:
        """Flush and commit; a retriable failure may have committed all the same."""

    def abort_transaction(self, timeout: float) -> None:
        """Abort: nothing of the transaction is ever seen by ``read_committed`` readers."""

    def poll(self, timeout: float) -> int:
        """Serve delivery reports; how many were served."""

    def flush(self, timeout: float) -> int:
        """Wait for queued records; how many are still queued."""

    def purge(self, in_queue: bool, in_flight: bool, blocking: bool) -> None:
        """Drop queued (and in-flight) records."""


class GroupConsumer(Protocol):
    """The part of ``confluent_kafka.Consumer`` the loop and its recovery use."""

    def assignment(self) -> list[TopicPartition]:
        """The partitions assigned to this member."""

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        """The group's committed offsets of ``partitions`` (stable, when read_committed)."""

    def seek(self, partition: TopicPartition) -> None:
        """Consume ``partition`` from its offset on."""

    def consumer_group_metadata(self) -> object:
        """The member's generation, for fencing zombie members (KIP-447)."""

    def poll(self, timeout: float) -> Message | None:
        """Serve callbacks and fetch at most one record."""


class Recovery(Protocol):
    """Where the consumer resumes after a failure, and what a committed batch teaches.

    :class:`GroupOffsets` is the standard answer and the one a cluster needs;
    :class:`credit_worker.single_node.SingleNodeRecovery` is the single development
    broker's.
    """

    def resume_positions(
        self,
        consumer: GroupConsumer,
        producer: TransactionalProducer,
        partitions: list[TopicPartition],
    ) -> list[TopicPartition]:
        """Where each of ``partitions`` resumes; raises ``KafkaException`` to retry later."""
        ...

    def check_on_assign(self, partitions: list[TopicPartition]) -> bool:
        """Whether newly assigned ``partitions`` need a rewind before anything is consumed."""
        ...

    def committed(
        self,
        inputs: list[Position],
        offsets: list[TopicPartition],
        outputs: dict[Position, Position],
    ) -> None:
        """A commit returned: its ``inputs``, next ``offsets``, and where each output went."""
        ...

    def already_reported(self, position: Position) -> bool:
        """Whether the input at ``position`` is consumed without producing again."""
        ...


class GroupOffsets:
    """Resume at the group's committed offsets, fetched stable (KIP-447); nothing else.

    ``timeout_s``: the offset fetch's deadline, in seconds.
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s

    def resume_positions(
        self,
        consumer: GroupConsumer,
        producer: TransactionalProducer,
        partitions: list[TopicPartition],
    ) -> list[TopicPartition]:
        """The group's committed offsets; the beginning where there are none.

        The beginning is ``auto.offset.reset=earliest`` (:func:`runtime.kafka.consumer_config`).
        """
        if not partitions:
            return []
        return [
            TopicPartition(p.topic, p.partition, p.offset if p.offset >= 0 else OFFSET_BEGINNING)
            for p in consumer.committed(partitions, self._timeout_s)
        ]

    def check_on_assign(self, partitions: list[TopicPartition]) -> bool:
        """Never: a new assignment starts at the committed offsets by itself."""
        return False

    def committed(
        self,
        inputs: list[Position],
        offsets: list[TopicPartition],
        outputs: dict[Position, Position],
    ) -> None:
        """Nothing to remember: the group's offsets are the truth."""

    def already_reported(self, position: Position) -> bool:
        """Never: an input is consumed again only when its transaction was aborted."""
        return False


Transform = Callable[[list[Message]], Sequence[Output]]


class TransactionLoop:
    """Runs one transaction per batch and recovers from failed ones (see the module).

    ``new_producer`` builds an un-initialised transactional producer (a configuration
    error raises at once); ``timeout_s`` is each transactional call's timeout, in
    seconds; a call ``stuck_margin_s`` past it is abandoned. ``stop`` ends commit retries.
    """

    def __init__(
        self,
        *,
        consumer: GroupConsumer,
        new_producer: Callable[[], TransactionalProducer],
        recovery: Recovery,
        timeout_s: float,
        stop: threading.Event,
        name: str,
        stuck_margin_s: float = STUCK_MARGIN_S,
    ) -> None:
        self.state = State.NO_PRODUCER
        self._deadline_s = timeout_s + stuck_margin_s
        self._consumer = consumer
        self._new_producer = new_producer
        self._recovery = recovery
        self._timeout_s = timeout_s
        self._stop = stop
        self._name = name
        self._producer: TransactionalProducer | None = None

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """The group assigned ``partitions``: rewind first if the recovery asks to."""
        if self.state is State.READY and self._recovery.check_on_assign(partitions):
            self.state = State.REWIND

    def recover(self) -> bool:
        """Bring the loop to ``READY``; False if Kafka refused (back off and call again)."""
        try:
            if self.state is State.NO_PRODUCER:
                producer = self._new_producer()
                self._call(lambda: producer.init_transactions(self._timeout_s))
                self._producer = producer
                self.state = State.REWIND
            if self.state is State.REWIND and self._producer is not None:
                self._rewind(self._producer)
        except KafkaException as error:
            _log.warning(f"{self._name}.recovery_failed", state=self.state.value, error=str(error))
            self._drop_producer(stuck=isinstance(error, StuckCall))
            # A rebalance the consumer owes the group (its session expired during an
            # outage) is served only by a poll, and until then the offset fetch times
            # out. What the poll returns is dropped: the rewind seeks every position.
            self._consumer.poll(0)
            return False
        return True

    def transact(self, batch: list[Message], transform: Transform) -> Sequence[Output] | None:
        """Run ``batch``'s transaction in state ``READY``; its outputs, or None if it failed.

        ``transform`` maps the inputs not :meth:`Recovery.already_reported` to outputs.
        """
        producer = self._producer
        if self.state is not State.READY or producer is None:
            raise RuntimeError(f"a transaction cannot run in state {self.state.value}")
        outputs = transform(
            [m for m in batch if not self._recovery.already_reported(position_of(m))]
        )
        delivered: dict[Position, Position] = {}
        offsets = next_offsets(batch)
        try:
            producer.begin_transaction()
            for output in outputs:
                producer.produce(
                    output.topic,
                    value=output.value,
                    key=output.key,
                    headers=output.headers,
                    on_delivery=partial(_delivered, delivered, output.source),
                )
            metadata = self._consumer.consumer_group_metadata()
            self._call(
                lambda: producer.send_offsets_to_transaction(offsets, metadata, self._timeout_s)
            )
            self._commit(producer)
        except KafkaException as error:
            self._fail(producer, error, batch)
            return None
        # The commit's flush served the delivery reports; a poll serves any left.
        producer.poll(0)
        self._recovery.committed([position_of(m) for m in batch], offsets, delivered)
        return outputs

    def _commit(self, producer: TransactionalProducer) -> None:
        backoff = Backoff()
        while True:
            try:
                self._call(lambda: producer.commit_transaction(self._timeout_s))
                return
            except StuckCall:
                raise
            except KafkaException as error:
                if self._stop.is_set() or not _error(error).retriable():
                    raise
                RETRIES.labels(self._name).inc()
                _log.warning(f"{self._name}.retrying_commit", error=str(error))
                self._stop.wait(backoff.next())

    def _fail(
        self, producer: TransactionalProducer, error: KafkaException, batch: list[Message]
    ) -> None:
        RETRIES.labels(self._name).inc()
        _log.warning(
            f"{self._name}.transaction_failed",
            error=str(error),
            messages=len(batch),
            first=[f"{p.topic}[{p.partition}]@{p.offset}" for p in first_offsets(batch)],
        )
        if isinstance(error, StuckCall) or _error(error).fatal():
            self._drop_producer(stuck=isinstance(error, StuckCall))
            return
        try:
            self._call(lambda: producer.abort_transaction(self._timeout_s))
        except KafkaException as abort_error:
            _log.info(f"{self._name}.abort_failed", error=str(abort_error))
            # A stuck abort still holds the handle: leave it alone, as any stuck call.
            self._drop_producer(stuck=isinstance(abort_error, StuckCall))
            return
        self.state = State.REWIND

    def _rewind(self, producer: TransactionalProducer) -> None:
        positions = self._recovery.resume_positions(
            self._consumer, producer, self._consumer.assignment()
        )
        for position in positions:
            try:
                self._consumer.seek(position)
            except KafkaException as error:
                # The partition moved to another member, which starts at the committed offset.
                _log.info(f"{self._name}.seek_skipped", error=str(error))
        self.state = State.READY
        _log.info(
            f"{self._name}.rewound",
            positions=[f"{p.topic}[{p.partition}]@{p.offset}" for p in positions],
        )

    def _drop_producer(self, stuck: bool = False) -> None:
        """Forget the producer; the next one fences it. A ``stuck`` one is left alone."""
        producer, self._producer = self._producer, None
        self.state = State.NO_PRODUCER
        if producer is not None and not stuck:
            # Nothing it still holds may be sent, and purged it is destroyed at once.
            producer.purge(in_queue=True, in_flight=True, blocking=False)

    def _call(self, operation: Callable[[], None]) -> None:
        call_with_deadline(operation, self._deadline_s)


def _error(error: KafkaException) -> KafkaError:
    """The ``KafkaError`` inside ``error`` (a bare one counts as non-retriable, non-fatal)."""
    inner = error.args[0] if error.args else None
    return inner if isinstance(inner, KafkaError) else KafkaError(KafkaError._FAIL, str(error))


def _delivered(
    outputs: dict[Position, Position], source: Position, error: KafkaError | None, sent: Message
) -> None:
    """Delivery report: note where the output of input ``source`` landed."""
    if error is None:
        outputs[source] = position_of(sent)
