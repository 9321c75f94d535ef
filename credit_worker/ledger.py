"""What this credit worker committed itself, to check the group's offsets against.

After a broker restart the group coordinator was seen to answer ``committed()`` wrongly
in *both* directions for the last transaction or two before the outage:

* offsets behind a transaction whose reports ``read_committed`` readers could see
  (resuming there reported that batch twice), and
* offsets that agreed with a transaction that was in fact aborted, although its
  ``commit_transaction`` had returned (trusting the client's word skipped an input: its
  report never came).

So neither the group nor the client is the judge. The output topic is: a batch is
visible there exactly when its transaction committed. The ledger keeps, per input
partition, the output position of every input this process reported in a transaction
whose commit returned. Where the group's offset is behind that, the worker reads those
output positions (:func:`runtime.kafka.visible_positions`) and resumes at the first
input whose report is not visible, skipping the later ones that are.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from runtime.kafka import Position

Partition = tuple[str, int]

# Inputs remembered per partition; the disputes seen covered the last one or two
# transactions, and a transaction is at most one consumer batch.
HISTORY_PER_PARTITION = 10_000


@dataclass(frozen=True)
class Dispute:
    """The group's offset is behind this process's own commits on one input partition."""

    partition: Partition
    committed_here: int
    # Each disputed input offset and where its report went (None: not known here).
    outputs: dict[int, Position | None]


class CommitLedger:
    """Per input partition: the next offset this process committed, and where each input went."""

    def __init__(self, history: int = HISTORY_PER_PARTITION) -> None:
        self._history = history
        self._next: dict[Partition, int] = {}
        self._outputs: dict[Partition, OrderedDict[int, Position]] = {}
        # Inputs between a resume point and the floor whose reports are already visible.
        self._reported: set[Position] = set()

    def partitions(self) -> list[TopicPartition]:
        """Every input partition this process committed on, at its next offset."""
        return [TopicPartition(t, p, offset) for (t, p), offset in sorted(self._next.items())]

    def knows(self, topic: str, partition: int) -> bool:
        """Whether this process committed anything on the partition."""
        return (topic, partition) in self._next

    def record(
        self, offsets: Iterable[TopicPartition], outputs: Mapping[Position, Position]
    ) -> None:
        """Note a transaction whose commit returned.

        ``offsets`` are its next offsets; ``outputs`` maps each input it reported to the
        position of the output record.
        """
        for next_offset in offsets:
            self._next[(next_offset.topic, next_offset.partition)] = next_offset.offset
        for (topic, partition, offset), output in outputs.items():
            history = self._outputs.setdefault((topic, partition), OrderedDict())
            history[offset] = output
            while len(history) > self._history:
                history.popitem(last=False)

    def dispute(self, committed: TopicPartition) -> Dispute | None:
        """The inputs the group says are not committed but this process says are, if any."""
        key = (committed.topic, committed.partition)
        here = self._next.get(key)
        if here is None or here <= committed.offset:
            return None
        history = self._outputs.get(key, OrderedDict())
        # No group offset at all: everything remembered is disputed.
        start = committed.offset if committed.offset >= 0 else next(iter(history), here)
        return Dispute(
            partition=key,
            committed_here=here,
            outputs={offset: history.get(offset) for offset in range(start, here)},
        )

    def settle(self, dispute: Dispute, visible: set[Position]) -> int:
        """Where to resume, given which of the dispute's outputs are ``visible``.

        The first input whose report is not visible (or not known) is consumed again;
        the visible ones after it are marked reported, to be skipped when they come.
        """
        topic, partition = dispute.partition
        resume = next(
            (offset for offset, output in dispute.outputs.items() if output not in visible),
            dispute.committed_here,
        )
        self._reported.update(
            (topic, partition, offset)
            for offset, output in dispute.outputs.items()
            if offset > resume and output in visible
        )
        return resume

    def already_reported(self, position: Position) -> bool:
        """Whether the input's report is known to be visible (consume it, report nothing)."""
        return position in self._reported

    def consumed(self, positions: Iterable[Position]) -> None:
        """These inputs were committed again: nothing is left to skip for them."""
        if self._reported:  # almost always empty: nothing to do per batch
            self._reported.difference_update(positions)
