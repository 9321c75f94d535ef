"""The single development broker's recovery: the group's offsets, checked against our commits.

On a one-node KRaft "cluster" (Kafka 4.x, internal topics with one replica) restarted
under load, the credit worker saw two anomalies that a replicated cluster does not show
(``tests/fault/test_cluster_drills.py`` runs the standard recovery there):

1. The group coordinator answered ``committed()`` wrongly in both directions for the
   last transaction or two before the outage (:mod:`credit_worker.ledger`).
2. A transaction completed without writing its markers to partitions whose leader was
   offline as the node stopped or started ("Couldn't find leader endpoint ... likely
   deleted already and hence can be skipped"). Records left open on an output partition
   stop every ``read_committed`` reader there; offsets left pending on the group's
   partition make the stable offset fetch wait until the same producer id writes a
   marker there again.

So where the group's offset is behind this process's own commits, the output topic
decides where to resume; an open transaction in the way is closed by an aborted one
(:meth:`SingleNodeRecovery.close_left_open`); and after
``FENCE_AFTER_FAILED_FETCHES`` failed offset fetches in a row the group's offsets
partition is closed the same way. Chosen by the composition root when
``PREQUAL_KAFKA_BROKERS=1``; never on the cluster.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from credit_worker.deadline import StuckCall, call_with_deadline
from credit_worker.ledger import CommitLedger
from credit_worker.transactions import (
    STUCK_MARGIN_S,
    GroupConsumer,
    TransactionalProducer,
)
from runtime.kafka import Position, UnreadablePositions, visible_positions
from runtime.logging import get_logger
from runtime.settings import Settings

_log = get_logger(__name__)

# The offset fetch was seen to time out for as long as it was tried while the group's
# offsets partition held a transaction left open (anomaly 2); one failure is usually an
# outage still ending.
FENCE_AFTER_FAILED_FETCHES = 2

# On the record an aborted transaction writes to end what was left open (never read).
FENCE_HEADERS: list[tuple[str, str | bytes | None]] = [
    ("prequal_fence", b"closes a transaction left open")
]

Visible = Callable[[Settings, set[Position], float], set[Position]]


class SingleNodeRecovery:
    """:class:`credit_worker.transactions.Recovery` for the single development broker.

    ``visible`` says which output positions ``read_committed`` readers see (default
    :func:`runtime.kafka.visible_positions`; tests pass a stand-in).
    """

    def __init__(self, settings: Settings, visible: Visible = visible_positions) -> None:
        self._settings = settings
        self._timeout_s = settings.kafka_transaction_timeout_ms / 1000
        self._visible = visible
        self.ledger = CommitLedger()
        self._failed_fetches = 0

    def check_on_assign(self, partitions: list[TopicPartition]) -> bool:
        """Back on partitions this process committed on: check the group's offsets first."""
        return any(self.ledger.knows(p.topic, p.partition) for p in partitions)

    def committed(
        self,
        inputs: list[Position],
        offsets: list[TopicPartition],
        outputs: dict[Position, Position],
    ) -> None:
        """Remember the commit, to check the group's offsets against it later."""
        self.ledger.record(offsets, outputs)
        self.ledger.consumed(inputs)

    def already_reported(self, position: Position) -> bool:
        """Whether a stale group offset brought back an input whose report is visible."""
        return self.ledger.already_reported(position)

    def resume_positions(
        self,
        consumer: GroupConsumer,
        producer: TransactionalProducer,
        partitions: list[TopicPartition],
    ) -> list[TopicPartition]:
        """The group's committed offsets, settled by the output topic where disputed.

        Raises ``KafkaException`` when the group or the output topic does not answer.
        """
        if not partitions:
            return []
        try:
            committed = consumer.committed(partitions, self._timeout_s)
        except KafkaException:
            self._failed_fetches += 1
            if self._failed_fetches >= FENCE_AFTER_FAILED_FETCHES:
                self.close_left_open(consumer, producer, set())
            raise
        self._failed_fetches = 0
        return [self._settle(consumer, producer, position) for position in committed]

    def _settle(
        self, consumer: GroupConsumer, producer: TransactionalProducer, group: TopicPartition
    ) -> TopicPartition:
        offset = group.offset
        dispute = self.ledger.dispute(group)
        if dispute is not None:
            outputs = {o for o in dispute.outputs.values() if o is not None}
            try:
                visible = self._visible(self._settings, outputs, self._timeout_s)
            except UnreadablePositions as blocked:
                self.close_left_open(consumer, producer, blocked.partitions)
                visible = self._visible(self._settings, outputs, self._timeout_s)
            offset = self.ledger.settle(dispute, visible)
            _log.warning(
                "credit_worker.stale_committed_offset",
                partition=f"{group.topic}[{group.partition}]",
                group_says=group.offset,
                committed_here=dispute.committed_here,
                reports_visible=len(visible),
                resume_at=offset,
            )
        return TopicPartition(
            group.topic, group.partition, offset if offset >= 0 else OFFSET_BEGINNING
        )

    def close_left_open(
        self,
        consumer: GroupConsumer,
        producer: TransactionalProducer,
        partitions: set[tuple[str, int]],
    ) -> None:
        """End, as aborted, whatever this transactional id left open.

        One transaction writes a record to each of ``partitions`` (topic, partition),
        adds the group's offsets of every partition this process committed on, and
        aborts: its abort markers close what the producer id left open there. Aborted
        records and offsets are never read or applied. A transaction that was in fact
        still being committed is finished by the coordinator first, and nothing of it
        is undone. Raises ``KafkaException`` if Kafka refuses.
        """
        offsets = self.ledger.partitions()
        if not partitions and not offsets:
            return
        _log.warning(
            "credit_worker.aborting_open_transaction",
            partitions=[f"{topic}[{partition}]" for topic, partition in sorted(partitions)],
            offsets=[f"{p.topic}[{p.partition}]" for p in offsets],
        )
        deadline_s = self._timeout_s + STUCK_MARGIN_S
        producer.begin_transaction()
        for topic, partition in sorted(partitions):
            producer.produce(topic, partition=partition, value=None, headers=FENCE_HEADERS)
        # A partition joins the transaction with its first record: one still queued at
        # the abort would leave that partition open.
        if producer.flush(self._timeout_s):
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, "the fencing record was not delivered")
            )
        if offsets:
            metadata = consumer.consumer_group_metadata()
            try:
                call_with_deadline(
                    lambda: producer.send_offsets_to_transaction(
                        offsets, metadata, self._timeout_s
                    ),
                    deadline_s,
                )
            except StuckCall:
                raise
            except KafkaException as error:
                # The offsets partition joins the transaction before the group answers,
                # so the abort below may close what was left open there all the same.
                _log.info("credit_worker.abort_offsets_refused", error=str(error))
        call_with_deadline(lambda: producer.abort_transaction(self._timeout_s), deadline_s)
