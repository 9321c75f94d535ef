"""The consume-transform-produce state machine, its faults driven through its seams.

The producer and consumer here are stand-ins that fail on cue with the errors librdkafka
raises (retriable, abortable, fatal, or a call that never returns); the real broker runs
the same loop in tests/integration/test_credit_worker.py, test_worker_outages.py and the
cluster drills (tests/fault/test_cluster_drills.py).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from credit_worker.transactions import GroupOffsets, Output, State, TransactionLoop
from runtime.kafka import Position

IN = "submitted"
OUT = "reports"


def _error(code: int = KafkaError._FAIL, **flags: bool) -> KafkaException:
    return KafkaException(KafkaError(code, "injected", **flags))


RETRIABLE = {"retriable": True}
ABORTABLE = {"txn_requires_abort": True}
FATAL = {"fatal": True}


class Producer:
    """A transactional producer whose calls fail as ``failures`` says, one failure per entry."""

    made = 0

    def __init__(self, failures: dict[str, list[KafkaException | threading.Event]]) -> None:
        Producer.made += 1
        self.number = Producer.made
        self.failures = failures
        self.calls: list[str] = []
        self.produced: list[tuple[str, bytes | None]] = []
        self._on_delivery: list[Any] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        pending = self.failures.get(name)
        if pending:
            failure = pending.pop(0)
            if isinstance(failure, threading.Event):
                failure.wait(30)  # a call that does not return
            else:
                raise failure

    def init_transactions(self, timeout: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self.produced.append((topic, kwargs.get("value")))
        self._on_delivery.append(kwargs.get("on_delivery"))

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: object, timeout: float
    ) -> None:
        self._call("offsets " + ",".join(f"{p.partition}@{p.offset}" for p in positions))

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit")
        for index, callback in enumerate(self._on_delivery):
            callback(None, Message(topic=OUT, partition=0, offset=index))
        self._on_delivery = []

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort")

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def purge(self, in_queue: bool, in_flight: bool, blocking: bool) -> None:
        self.calls.append("purge")


class Consumer:
    """A group member whose committed offsets are ``committed``; records its seeks."""

    def __init__(self, committed: dict[int, int]) -> None:
        self.committed_offsets = committed
        self.fetch_failures: list[KafkaException] = []
        self.seeks: list[tuple[int, int]] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(IN, p) for p in sorted(self.committed_offsets)]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.fetch_failures:
            raise self.fetch_failures.pop(0)
        return [
            TopicPartition(p.topic, p.partition, self.committed_offsets[p.partition])
            for p in partitions
        ]

    def seek(self, partition: TopicPartition) -> None:
        self.seeks.append((partition.partition, partition.offset))

    def consumer_group_metadata(self) -> object:
        return object()

    def poll(self, timeout: float) -> None:
        return None


class Rig:
    """A loop over the stand-ins; ``producers`` lists every producer it built."""

    def __init__(self, committed: dict[int, int] | None = None, **loop: Any) -> None:
        self.failures: dict[str, list[KafkaException | threading.Event]] = {}
        self.producers: list[Producer] = []
        self.consumer = Consumer(committed if committed is not None else {0: 10})
        self.stop = threading.Event()
        self.loop = TransactionLoop(
            consumer=self.consumer,
            new_producer=self._new_producer,
            recovery=loop.pop("recovery", GroupOffsets(1.0)),
            timeout_s=1.0,
            stop=self.stop,
            name="test-worker",
            **loop,
        )

    def _new_producer(self) -> Producer:
        self.producers.append(Producer(self.failures))
        return self.producers[-1]

    def fail(self, call: str, *failures: KafkaException | threading.Event) -> None:
        self.failures.setdefault(call, []).extend(failures)

    def state(self) -> State:
        """The loop's state, read anew (a call may have changed it)."""
        return self.loop.state

    def ready(self) -> Rig:
        assert self.loop.recover()
        assert self.loop.state is State.READY
        self.consumer.seeks.clear()
        return self


def _batch(*offsets: int, partition: int = 0) -> list[Message]:
    return [Message(topic=IN, partition=partition, offset=o, value=b"in") for o in offsets]


def _outputs(batch: list[Message]) -> Sequence[Output]:
    return [Output((IN, m.partition() or 0, m.offset() or 0), OUT, None, b"out") for m in batch]


def test_a_new_loop_fences_its_predecessor_and_rewinds_to_the_committed_offsets() -> None:
    rig = Rig({0: 10, 1: OFFSET_INVALID})

    assert rig.loop.state is State.NO_PRODUCER
    assert rig.loop.recover()

    assert rig.state() is State.READY
    assert rig.producers[0].calls == ["init"]
    # A partition nobody committed on starts at the beginning (auto.offset.reset=earliest).
    assert rig.consumer.seeks == [(0, 10), (1, OFFSET_BEGINNING)]


def test_a_batch_commits_its_outputs_with_the_offsets_after_it_in_one_transaction() -> None:
    rig = Rig().ready()

    outputs = rig.loop.transact(_batch(10, 11, 12), _outputs)

    assert outputs is not None
    assert len(outputs) == 3
    assert rig.producers[0].calls == ["init", "begin", "offsets 0@13", "commit"]
    assert rig.producers[0].produced == [(OUT, b"out")] * 3
    assert rig.loop.state is State.READY


def test_a_retriable_commit_failure_is_retried_and_never_aborted() -> None:
    # A commit that timed out may have committed on the coordinator: an abort would undo
    # nothing then, but a rewind would produce the batch twice.
    rig = Rig().ready()
    rig.fail("commit", _error(KafkaError._TIMED_OUT, **RETRIABLE))

    assert rig.loop.transact(_batch(10), _outputs) is not None

    assert rig.producers[0].calls == ["init", "begin", "offsets 0@11", "commit", "commit"]
    assert rig.consumer.seeks == []


def test_an_abortable_failure_aborts_keeps_the_producer_and_rewinds_the_batch() -> None:
    rig = Rig().ready()
    rig.fail("offsets 0@11", _error(**ABORTABLE))

    assert rig.loop.transact(_batch(10), _outputs) is None
    assert rig.loop.state is State.REWIND
    assert rig.loop.recover()

    assert rig.producers[0].calls == ["init", "begin", "offsets 0@11", "abort"]
    assert len(rig.producers) == 1
    assert rig.consumer.seeks == [(0, 10)]  # the committed offset: the batch again


def test_a_fatal_error_drops_the_producer_and_a_new_one_fences_it_before_the_rewind() -> None:
    rig = Rig().ready()
    rig.fail("commit", _error(KafkaError._FENCED, **FATAL))

    assert rig.loop.transact(_batch(10), _outputs) is None
    assert rig.loop.state is State.NO_PRODUCER
    assert rig.loop.recover()

    first, second = rig.producers
    assert first.calls == ["init", "begin", "offsets 0@11", "commit", "purge"]
    assert second.calls == ["init"]
    assert rig.consumer.seeks == [(0, 10)]


def test_a_call_stuck_past_its_deadline_abandons_the_producer_untouched() -> None:
    rig = Rig(stuck_margin_s=0.1).ready()
    never = threading.Event()
    rig.fail("offsets 0@11", never)

    assert rig.loop.transact(_batch(10), _outputs) is None
    assert rig.loop.state is State.NO_PRODUCER
    assert rig.loop.recover()

    # No abort and no purge on a handle that a blocked call still holds.
    assert rig.producers[0].calls == ["init", "begin", "offsets 0@11"]
    assert len(rig.producers) == 2
    never.set()


def test_an_abort_that_fails_too_drops_the_producer() -> None:
    rig = Rig().ready()
    rig.fail("commit", _error())
    rig.fail("abort", _error(KafkaError._TIMED_OUT))

    assert rig.loop.transact(_batch(10), _outputs) is None

    assert rig.loop.state is State.NO_PRODUCER
    assert rig.producers[0].calls[-2:] == ["abort", "purge"]


def test_an_abort_stuck_past_its_deadline_abandons_the_producer_untouched() -> None:
    rig = Rig(stuck_margin_s=0.1).ready()
    never = threading.Event()
    rig.fail("commit", _error(**ABORTABLE))
    rig.fail("abort", never)

    assert rig.loop.transact(_batch(10), _outputs) is None

    assert rig.loop.state is State.NO_PRODUCER
    assert rig.producers[0].calls[-2:] == ["commit", "abort"]  # no purge
    never.set()


def test_a_stop_ends_the_commit_retries_and_the_transaction_is_aborted() -> None:
    rig = Rig().ready()
    rig.stop.set()
    rig.fail("commit", _error(KafkaError._TIMED_OUT, **RETRIABLE))

    assert rig.loop.transact(_batch(10), _outputs) is None

    assert rig.producers[0].calls[-2:] == ["commit", "abort"]


def test_a_failed_rewind_starts_the_recovery_over_from_a_new_producer() -> None:
    rig = Rig().ready()
    rig.fail("commit", _error(**ABORTABLE))
    rig.loop.transact(_batch(10), _outputs)
    rig.consumer.fetch_failures.append(_error(KafkaError._TIMED_OUT))

    assert not rig.loop.recover()
    assert rig.loop.state is State.NO_PRODUCER
    assert rig.loop.recover()

    assert len(rig.producers) == 2
    assert rig.consumer.seeks == [(0, 10)]


def test_a_producer_that_cannot_initialise_leaves_the_loop_waiting_for_a_new_one() -> None:
    rig = Rig()
    rig.fail("init", _error(KafkaError._TIMED_OUT, **RETRIABLE))

    assert not rig.loop.recover()
    assert rig.loop.state is State.NO_PRODUCER
    assert rig.loop.recover()
    assert rig.state() is State.READY


class _Remembering(GroupOffsets):
    """A recovery that asks for a check on assignment and marks input 11 as reported."""

    def __init__(self) -> None:
        super().__init__(1.0)
        self.commits: list[tuple[list[Position], dict[Position, Position]]] = []

    def check_on_assign(self, partitions: list[TopicPartition]) -> bool:
        return True

    def already_reported(self, position: Position) -> bool:
        return position == (IN, 0, 11)

    def committed(
        self,
        inputs: list[Position],
        offsets: list[TopicPartition],
        outputs: dict[Position, Position],
    ) -> None:
        self.commits.append((inputs, outputs))


def test_inputs_the_recovery_knows_are_reported_are_consumed_without_a_second_output() -> None:
    recovery = _Remembering()
    rig = Rig(recovery=recovery).ready()

    outputs = rig.loop.transact(_batch(10, 11, 12), _outputs)

    assert outputs is not None
    assert [o.source for o in outputs] == [(IN, 0, 10), (IN, 0, 12)]
    assert rig.producers[0].calls[-2:] == ["offsets 0@13", "commit"]  # all three consumed
    inputs, delivered = recovery.commits[0]
    assert inputs == [(IN, 0, 10), (IN, 0, 11), (IN, 0, 12)]
    assert delivered == {(IN, 0, 10): (OUT, 0, 0), (IN, 0, 12): (OUT, 0, 1)}


def test_an_assignment_the_recovery_wants_checked_is_rewound_before_consuming() -> None:
    rig = Rig(recovery=_Remembering()).ready()

    rig.loop.assigned([TopicPartition(IN, 0)])

    assert rig.loop.state is State.REWIND
    with pytest.raises(RuntimeError, match="rewind"):
        rig.loop.transact(_batch(10), _outputs)
    assert rig.loop.recover()
    assert rig.consumer.seeks == [(0, 10)]


def test_on_the_cluster_an_assignment_needs_no_rewind() -> None:
    rig = Rig().ready()

    rig.loop.assigned([TopicPartition(IN, 0)])

    assert rig.loop.state is State.READY
