"""Where the credit worker resumes: the group's offsets, checked against its own commits.

The output topic is the judge where the two disagree; here a stand-in says which output
records are visible (tests/integration/test_kafka_visibility.py reads the real broker).
"""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, TopicPartition

import credit_worker.worker as worker_module
from credit_worker.ledger import CommitLedger
from credit_worker.worker import CreditWorker
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

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.asked += 1
        return [
            TopicPartition(p.topic, p.partition, self._offsets.get(p.partition, OFFSET_INVALID))
            for p in partitions
        ]


def _resume(worker: CreditWorker, group: _Group, partitions: list[int]) -> dict[int, int]:
    positions = worker._resume_positions(  # the rule under test
        group,  # type: ignore[arg-type]
        [TopicPartition(IN, p) for p in partitions],
    )
    return {p.partition: p.offset for p in positions}


def test_the_worker_reads_the_output_only_where_the_group_and_its_commits_disagree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = CreditWorker(Settings())
    _commit(worker._ledger, 2, range(318, 320), 40)
    _commit(worker._ledger, 0, range(0, 10), 100)
    asked: list[set[Position]] = []

    def visible(_settings: Settings, positions: set[Position], _timeout: float) -> set[Position]:
        asked.append(set(positions))
        return set(positions)

    monkeypatch.setattr(worker_module, "visible_positions", visible)

    assert _resume(worker, _Group({0: 10, 2: 318}), [0, 2]) == {0: 10, 2: 320}
    assert asked == [{(OUT, 0, 40), (OUT, 0, 41)}]


def test_a_partition_nobody_committed_starts_from_the_beginning() -> None:
    assert _resume(CreditWorker(Settings()), _Group({}), [1]) == {1: OFFSET_BEGINNING}


def test_no_partitions_means_no_offset_fetch() -> None:
    group = _Group({})

    assert _resume(CreditWorker(Settings()), group, []) == {}
    assert group.asked == 0


def test_an_open_transaction_in_the_way_is_aborted_before_the_outputs_are_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = CreditWorker(Settings())
    _commit(worker._ledger, 2, range(78, 79), 25)
    answers: list[set[Position] | Exception] = [
        UnreadablePositions({(OUT, 0)}, 10),
        set(),  # after the abort: the report was in the transaction left open
    ]
    aborted: list[set[tuple[str, int]]] = []

    def visible(_settings: Settings, _positions: set[Position], _timeout: float) -> set[Position]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(worker_module, "visible_positions", visible)
    monkeypatch.setattr(worker, "_abort_left_open", lambda _consumer, p: aborted.append(p))

    assert _resume(worker, _Group({2: 78}), [2]) == {2: 78}
    assert aborted == [{(OUT, 0)}]
