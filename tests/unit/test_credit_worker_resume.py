"""Where the credit worker resumes on the single broker: the group's offsets, checked.

:class:`SingleNodeRecovery` checks the group's offsets against its own commits; the
output topic is the judge where the two disagree. Here a stand-in says which output
records are visible (tests/integration/test_kafka_visibility.py reads the real broker).
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from credit_worker.ledger import CommitLedger
from credit_worker.single_node import SingleNodeRecovery
from credit_worker.transactions import GroupOffsets
from credit_worker.worker import recovery_for
from runtime.kafka import Position, UnreadablePositions
from runtime.settings import Settings

IN = "submitted"
OUT = "reports"


def _commit(ledger: CommitLedger, partition: int, offsets: range, first_output: int) -> None:
    """One committed transaction reporting ``offsets`` of input ``partition``."""
    ledger.record(
        [TopicPartition(IN, partition, offsets[-1] + 1)],
        {(IN, partition, o): (OUT, 0, first_output + i) for i, o in enumerate(offsets)},
    )


def _settle(ledger: CommitLedger, group: int, visible: set[Position], partition: int = 2) -> int:
    dispute = ledger.dispute(TopicPartition(IN, partition, group))
    assert dispute is not None
    return ledger.settle(dispute, visible)


def test_a_group_offset_at_or_past_this_process_commits_is_not_disputed() -> None:
    ledger = CommitLedger()
    _commit(ledger, 2, range(300, 320), 0)

    assert ledger.dispute(TopicPartition(IN, 2, 320)) is None
    assert ledger.dispute(TopicPartition(IN, 2, 500)) is None
    assert ledger.dispute(TopicPartition(IN, 1, 7)) is None
    assert ledger.dispute(TopicPartition(IN, 1, OFFSET_INVALID)) is None


def test_a_stale_group_offset_whose_reports_are_visible_resumes_after_them() -> None:
    ledger = CommitLedger()
    _commit(ledger, 2, range(318, 319), 40)
    _commit(ledger, 2, range(319, 320), 41)

    assert _settle(ledger, 318, {(OUT, 0, 40), (OUT, 0, 41)}) == 320


def test_a_group_offset_that_is_right_about_an_aborted_transaction_resumes_at_it() -> None:
    # The commit returned, yet the report never became visible and the group agrees.
    ledger = CommitLedger()
    _commit(ledger, 2, range(78, 79), 25)

    assert _settle(ledger, 78, set()) == 78
    assert not ledger.already_reported((IN, 2, 78))


def test_inputs_after_an_invisible_report_are_consumed_again_but_only_reported_once() -> None:
    ledger = CommitLedger()
    _commit(ledger, 2, range(10, 11), 0)
    _commit(ledger, 2, range(11, 13), 1)

    assert _settle(ledger, 10, {(OUT, 0, 1), (OUT, 0, 2)}) == 10
    assert not ledger.already_reported((IN, 2, 10))
    assert ledger.already_reported((IN, 2, 11))
    assert ledger.already_reported((IN, 2, 12))

    ledger.consumed([(IN, 2, 10), (IN, 2, 11), (IN, 2, 12)])
    assert not ledger.already_reported((IN, 2, 11))


def test_an_input_whose_output_this_process_does_not_know_is_consumed_again() -> None:
    ledger = CommitLedger()
    ledger.record([TopicPartition(IN, 2, 6)], {(IN, 2, 5): (OUT, 0, 9)})

    assert _settle(ledger, 4, {(OUT, 0, 9)}) == 4
    assert ledger.already_reported((IN, 2, 5))


def test_a_group_with_no_offset_at_all_disputes_what_this_process_remembers() -> None:
    ledger = CommitLedger()
    _commit(ledger, 0, range(3, 5), 0)

    dispute = ledger.dispute(TopicPartition(IN, 0, OFFSET_INVALID))

    assert dispute is not None
    assert list(dispute.outputs) == [3, 4]
    assert ledger.settle(dispute, {(OUT, 0, 0), (OUT, 0, 1)}) == 5


def test_the_history_of_outputs_keeps_only_the_newest_inputs() -> None:
    ledger = CommitLedger(history=3)
    _commit(ledger, 1, range(0, 5), 0)

    dispute = ledger.dispute(TopicPartition(IN, 1, 0))

    assert dispute is not None
    assert dispute.outputs == {0: None, 1: None, 2: (OUT, 0, 2), 3: (OUT, 0, 3), 4: (OUT, 0, 4)}


class _Group:
    """Answers ``committed`` as the group coordinator did after a broker restart."""

    def __init__(self, offsets: dict[int, int]) -> None:
        self._offsets = offsets
        self.asked = 0

    def assignment(self) -> list[TopicPartition]:
        return []

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.asked += 1
        return [
            TopicPartition(p.topic, p.partition, self._offsets.get(p.partition, OFFSET_INVALID))
            for p in partitions
        ]

    def seek(self, partition: TopicPartition) -> None:
        raise AssertionError("the recovery only says where; the loop seeks")

    def consumer_group_metadata(self) -> object:
        return object()

    def poll(self, timeout: float) -> None:
        return None


class _Producer:
    """Records the fencing transaction the recovery runs."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def init_transactions(self, timeout: float) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(f"produce {topic}[{kwargs['partition']}]")

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: object, timeout: float
    ) -> None:
        self.calls.append("offsets " + ",".join(f"{p.partition}@{p.offset}" for p in positions))

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def purge(self, in_queue: bool, in_flight: bool, blocking: bool) -> None:
        self.calls.append("purge")


class _Visible:
    """Stands in for the output topic: each call pops the next answer."""

    def __init__(self, *answers: set[Position] | Exception | None) -> None:
        self._answers = list(answers)
        self.asked: list[set[Position]] = []

    def __call__(self, _settings: Settings, positions: set[Position], _t: float) -> set[Position]:
        self.asked.append(set(positions))
        answer = self._answers.pop(0) if self._answers else None
        if isinstance(answer, Exception):
            raise answer
        return set(positions) if answer is None else answer


def _resume(
    recovery: SingleNodeRecovery, group: _Group, partitions: list[int], producer: Any = None
) -> dict[int, int]:
    positions = recovery.resume_positions(
        group, producer or _Producer(), [TopicPartition(IN, p) for p in partitions]
    )
    return {p.partition: p.offset for p in positions}


def test_the_worker_reads_the_output_only_where_the_group_and_its_commits_disagree() -> None:
    visible = _Visible()
    recovery = SingleNodeRecovery(Settings(), visible)
    _commit(recovery.ledger, 2, range(318, 320), 40)
    _commit(recovery.ledger, 0, range(0, 10), 100)

    assert _resume(recovery, _Group({0: 10, 2: 318}), [0, 2]) == {0: 10, 2: 320}
    assert visible.asked == [{(OUT, 0, 40), (OUT, 0, 41)}]


def test_a_partition_nobody_committed_starts_from_the_beginning() -> None:
    assert _resume(SingleNodeRecovery(Settings()), _Group({}), [1]) == {1: OFFSET_BEGINNING}


def test_no_partitions_means_no_offset_fetch() -> None:
    group = _Group({})

    assert _resume(SingleNodeRecovery(Settings()), group, []) == {}
    assert group.asked == 0


def test_an_open_transaction_in_the_way_is_aborted_before_the_outputs_are_read_again() -> None:
    # After the abort: the report was in the transaction left open, so it is not visible.
    visible = _Visible(UnreadablePositions({(OUT, 0)}, 10), set())
    recovery = SingleNodeRecovery(Settings(), visible)
    _commit(recovery.ledger, 2, range(78, 79), 25)
    producer = _Producer()

    assert _resume(recovery, _Group({2: 78}), [2], producer) == {2: 78}
    assert producer.calls == ["begin", f"produce {OUT}[0]", "offsets 2@79", "abort"]


def test_back_on_a_partition_it_committed_on_the_worker_checks_before_consuming() -> None:
    recovery = SingleNodeRecovery(Settings())
    _commit(recovery.ledger, 2, range(0, 3), 0)

    assert recovery.check_on_assign([TopicPartition(IN, 2)])
    assert not recovery.check_on_assign([TopicPartition(IN, 1)])


class _FailingGroup(_Group):
    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "offset fetch timed out"))


def test_the_group_offsets_left_open_are_closed_after_the_second_failed_fetch_in_a_row() -> None:
    recovery = SingleNodeRecovery(Settings())
    _commit(recovery.ledger, 2, range(0, 3), 0)
    producer = _Producer()

    for _ in range(2):
        with pytest.raises(KafkaException):
            _resume(recovery, _FailingGroup({}), [2], producer)

    # Only the second failure fences: one failure is usually an outage still ending.
    assert producer.calls == ["begin", "offsets 2@3", "abort"]


def test_the_single_broker_gets_the_checked_recovery_and_the_cluster_the_standard_one() -> None:
    assert isinstance(recovery_for(Settings(kafka_brokers=1)), SingleNodeRecovery)
    assert isinstance(recovery_for(Settings(kafka_brokers=3)), GroupOffsets)
