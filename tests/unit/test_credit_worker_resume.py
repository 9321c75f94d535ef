"""Where the credit worker resumes: the group's offsets, floored by its own commits."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, TopicPartition

from credit_worker.worker import CreditWorker
from runtime.settings import Settings


class _Group:
    """Answers ``committed`` as the group coordinator did after a broker restart."""

    def __init__(self, offsets: dict[int, int]) -> None:
        self._offsets = offsets

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(p.topic, p.partition, self._offsets.get(p.partition, OFFSET_INVALID))
            for p in partitions
        ]


def _resume(worker: CreditWorker, group: _Group, partitions: list[int]) -> dict[int, int]:
    positions = worker._resume_positions(  # the rule under test
        group,  # type: ignore[arg-type]
        [TopicPartition("submitted", p) for p in partitions],
    )
    return {p.partition: p.offset for p in positions}


def test_a_stale_group_offset_never_sends_the_worker_behind_its_own_commits() -> None:
    worker = CreditWorker(Settings())
    worker._committed[("submitted", 2)] = 320

    assert _resume(worker, _Group({2: 318}), [2]) == {2: 320}


def test_the_group_offset_wins_when_another_member_went_further() -> None:
    worker = CreditWorker(Settings())
    worker._committed[("submitted", 0)] = 10

    assert _resume(worker, _Group({0: 500}), [0]) == {0: 500}


def test_a_partition_nobody_committed_starts_from_the_beginning() -> None:
    worker = CreditWorker(Settings())

    assert _resume(worker, _Group({}), [1]) == {1: OFFSET_BEGINNING}


def test_no_partitions_means_no_offset_fetch() -> None:
    assert _resume(CreditWorker(Settings()), _Group({}), []) == {}
