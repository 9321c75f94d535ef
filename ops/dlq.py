"""Read the dead-letter topic and redrive its messages to where they came from.

Reading: a consumer of its own (a fresh group id, ``read_committed``, partitions
assigned, never committing) reads each partition from the requested offset up to the
high watermark taken when the read started; a partition is finished at that offset or
at its end-of-partition event (which, under ``read_committed``, also covers the
transaction markers the credit worker's dead letters leave behind). The topic is not
changed and no consumer group is left behind.

Redriving: the original value and key go back to ``dlq_source_topic``, on
``dlq_source_partition`` (where the message was consumed from; by key when that header
is missing), with the original headers (those the DLQ added removed; ``event_id``,
``correlation_id`` and the rest kept) plus ``dlq_redriven_from: "<partition>:<offset>"``.
The producer is idempotent and acks=all and every delivery is awaited. A dead letter
stays on the DLQ after a redrive (Kafka cannot delete one message): redriving it again
sends it again, and the consumers' inboxes make the second delivery a no-op.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from messaging.dead_letter import (
    CONSUMER,
    FAILED_AT,
    REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
)
from messaging.headers import EVENT_ID, EVENT_TYPE, Headers, header_pairs, header_value
from runtime.kafka import admin_config, consumer_config, producer_config, watermarks
from runtime.logging import mask_pan
from runtime.settings import Settings

#: Set on a redriven message: the DLQ position it was redriven from.
REDRIVEN_FROM = "dlq_redriven_from"
#: Headers the dead-letter path added; a redrive removes them again.
DLQ_HEADERS = frozenset(
    {SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, CONSUMER, REASON, FAILED_AT, REDRIVEN_FROM}
)
_POLL_S = 0.2


class DeadLetterReadTimeout(Exception):
    """The broker did not deliver the dead letters up to the watermarks in time."""


class RedriveFailed(Exception):
    """Kafka did not acknowledge every redriven message."""


class MissingSourceTopic(ValueError):
    """A dead letter's source topic does not exist (deleted, or never created here)."""


class UnknownPartition(ValueError):
    """The dead-letter topic has no such partition."""


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter topic."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def position(self) -> str:
        """``<partition>:<offset>`` on the dead-letter topic."""
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        """A header's text value, if present."""
        return header_value(self.headers, name)

    @property
    def source_topic(self) -> str | None:
        """The topic the message was consumed from."""
        return self.header(SOURCE_TOPIC) or None

    @property
    def source_partition(self) -> int | None:
        """The partition it was consumed from, if recorded."""
        text = self.header(SOURCE_PARTITION)
        return int(text) if text is not None and text.isdigit() else None

    @property
    def consumer(self) -> str | None:
        """The consumer that gave up on it."""
        return self.header(CONSUMER)

    @property
    def reason(self) -> str | None:
        """Why it was dead-lettered (PAN-masked by the consumer)."""
        return self.header(REASON)

    def original_headers(self) -> Headers:
        """The headers it had before it was dead-lettered (``dlq_*`` removed)."""
        return [(name, value) for name, value in self.headers if name not in DLQ_HEADERS]

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready summary: where it is, where it came from, what it is, why."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "key": _text(self.key),
            "event_id": self.header(EVENT_ID),
            "event_type": self.header(EVENT_TYPE),
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": _int_or_none(self.header(SOURCE_OFFSET)),
            "consumer": self.consumer,
            "reason": self.reason,
            "failed_at": self.header(FAILED_AT),
            "redriven_from": self.header(REDRIVEN_FROM),
        }

    def headers_text(self) -> list[tuple[str, str | None]]:
        """Every header as text, in order (values PAN-masked)."""
        return [
            (name, None if value is None else mask_pan(_text(value) or ""))
            for name, value in self.headers
        ]

    def value_text(self) -> str | None:
        """The value as text, PAN-masked: it is shown to people."""
        text = _text(self.value)
        return None if text is None else mask_pan(text)


def _text(raw: str | bytes | None) -> str | None:
    if raw is None:
        return None
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def read_dead_letters(
    settings: Settings,
    *,
    partition: int | None = None,
    offset: int | None = None,
    first_only: bool = False,
    timeout_s: float = 15.0,
    on_read: Callable[[int, int], None] | None = None,
) -> list[DeadLetter]:
    """The dead letters present now, in (partition, offset) order.

    ``partition`` limits the read to one partition; ``offset`` starts each partition
    there; ``first_only`` stops each partition after its first message (to fetch one).
    ``on_read`` is told how many were read so far and how many there are, as they come.
    Raises :class:`KafkaException` when the broker cannot be reached,
    :class:`DeadLetterReadTimeout` when it does not deliver in time.
    """
    topic = settings.topic_dlq
    config = consumer_config(
        settings, f"prequal-ops-dlq-{uuid.uuid4()}", **{"enable.partition.eof": True}
    )
    consumer = Consumer(config)
    try:
        starts: dict[int, int] = {}
        ends = _assign(consumer, topic, partition, offset, timeout_s, starts)
        total = sum(ends[number] - starts[number] for number in ends)
        return _read(consumer, ends, first_only, timeout_s, lambda n: on_read and on_read(n, total))
    finally:
        consumer.close()


def _assign(
    consumer: Consumer,
    topic: str,
    partition: int | None,
    offset: int | None,
    timeout_s: float,
    starts: dict[int, int],
) -> dict[int, int]:
    """Assign the partitions to read at their start offsets; return each one's end offset."""
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        if partition is not None:
            raise UnknownPartition(f"topic {topic} does not exist")
        return {}  # no dead letter was ever written
    partitions = sorted(metadata.partitions)
    if partition is not None:
        if partition not in metadata.partitions:
            raise UnknownPartition(
                f"{topic} has no partition {partition} (it has {', '.join(map(str, partitions))})"
            )
        partitions = [partition]
    ends: dict[int, int] = {}
    assignment: list[TopicPartition] = []
    for number in partitions:
        low, high = watermarks(consumer, TopicPartition(topic, number), timeout_s)
        start = low if offset is None else max(low, offset)
        if start < high:
            ends[number] = high
            starts[number] = start
            assignment.append(TopicPartition(topic, number, start))
    if assignment:
        consumer.assign(assignment)
    return ends


def _read(
    consumer: Consumer,
    ends: dict[int, int],
    first_only: bool,
    timeout_s: float,
    on_read: Callable[[int], object],
) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    pending = set(ends)
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise DeadLetterReadTimeout(
                f"nothing received for {timeout_s:.0f} s before the end of partitions "
                f"{sorted(pending)}"
            )
        message = consumer.poll(_POLL_S)
        if message is None:
            continue
        deadline = time.monotonic() + timeout_s  # the limit is on silence, not on size
        number = message.partition()
        if number is None or number not in pending:
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                pending.discard(number)
                continue
            raise KafkaException(error)
        offset = message.offset() or 0
        if offset >= ends[number]:
            pending.discard(number)  # written after the read started
            continue
        letters.append(_letter(message, number, offset))
        on_read(len(letters))
        if first_only or offset >= ends[number] - 1:
            pending.discard(number)
    letters.sort(key=lambda letter: (letter.partition, letter.offset))
    return letters


def _letter(message: Message, partition: int, offset: int) -> DeadLetter:
    timestamp_type, timestamp = message.timestamp()
    key = message.key()
    value = message.value()
    return DeadLetter(
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp if timestamp_type else None,
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else value,
        headers=header_pairs(message.headers()),
    )


def find_dead_letters(
    settings: Settings, offset: int, partition: int | None = None, timeout_s: float = 15.0
) -> list[DeadLetter]:
    """The dead letters at ``offset`` (in ``partition``, or in every partition)."""
    found = read_dead_letters(
        settings, partition=partition, offset=offset, first_only=True, timeout_s=timeout_s
    )
    return [letter for letter in found if letter.offset == offset]


def select(
    letters: Iterable[DeadLetter], *, consumer: str | None = None, source_topic: str | None = None
) -> list[DeadLetter]:
    """The dead letters given up by ``consumer`` and/or consumed from ``source_topic``."""
    return [
        letter
        for letter in letters
        if (consumer is None or letter.consumer == consumer)
        and (source_topic is None or letter.source_topic == source_topic)
    ]


@dataclass(frozen=True)
class Redriven:
    """One dead letter sent back, and where it went."""

    letter: DeadLetter
    topic: str
    partition: int
    offset: int

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "from": self.letter.position,
            "event_id": self.letter.header(EVENT_ID),
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }


def redrivable(letters: Iterable[DeadLetter]) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """Split ``letters`` into those that name their source topic and those that do not."""
    ok: list[DeadLetter] = []
    unknown: list[DeadLetter] = []
    for letter in letters:
        (ok if letter.source_topic else unknown).append(letter)
    return ok, unknown


def redrive(
    settings: Settings,
    letters: Sequence[DeadLetter],
    on_delivered: Callable[[int], None] | None = None,
) -> list[Redriven]:
    """Produce each dead letter back to its source topic and wait for every delivery.

    ``on_delivered`` is told how many Kafka acknowledged so far, as they are.

    Raises :class:`RedriveFailed` (naming what was and was not delivered) when Kafka does
    not acknowledge them all; :class:`MissingSourceTopic` when a source topic does not
    exist; :class:`ValueError` for a letter without a source topic.
    """
    _check_sources(settings, letters)
    producer = Producer(producer_config(settings))
    deliveries = _Deliveries(on_delivered)
    for letter in letters:
        headers = [*letter.original_headers(), (REDRIVEN_FROM, letter.position.encode())]
        target = letter.source_partition
        producer.produce(
            letter.source_topic or "",
            value=letter.value,
            key=letter.key,
            partition=-1 if target is None else target,  # -1: by key (the partitioner)
            headers=headers,
            on_delivery=deliveries.callback(letter),
        )
    remaining = producer.flush(settings.relay_delivery_timeout_ms / 1000 + 5)
    if deliveries.failures or remaining:
        raise RedriveFailed(
            f"{len(deliveries.delivered)} of {len(letters)} redriven; not acknowledged: "
            f"{'; '.join(deliveries.failures) or f'{remaining} messages'}"
        )
    return [deliveries.delivered[letter.position] for letter in letters]


def _check_sources(settings: Settings, letters: Sequence[DeadLetter]) -> None:
    """Refuse letters without a source topic, or whose source topic does not exist.

    Raises :class:`ValueError` for the former, :class:`MissingSourceTopic` for the latter.
    """
    missing = [letter.position for letter in letters if not letter.source_topic]
    if missing:
        raise ValueError(f"no {SOURCE_TOPIC} header on {', '.join(missing)}: cannot redrive")
    # The broker never auto-creates topics: producing to a missing one would only time
    # out, and the operator would be told that Kafka is unreachable.
    existing = AdminClient(admin_config(settings)).list_topics(timeout=10).topics
    absent = sorted({letter.source_topic or "" for letter in letters} - set(existing))
    if absent:
        raise MissingSourceTopic(
            f"source topic {', '.join(absent)} does not exist; create it"
            " (prequal-ops topics create) and redrive again"
        )


class _Deliveries:
    """What Kafka acknowledged (by DLQ position) and refused, as the callbacks report it."""

    def __init__(self, on_delivered: Callable[[int], None] | None) -> None:
        self.delivered: dict[str, Redriven] = {}
        self.failures: list[str] = []
        self._on_delivered = on_delivered

    def callback(self, letter: DeadLetter) -> Callable[[KafkaError | None, Message], None]:
        """The producer's ``on_delivery`` for ``letter``."""

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self.failures.append(f"{letter.position}: {error.str()}")
                return
            self.delivered[letter.position] = Redriven(
                letter, message.topic() or "", message.partition() or 0, message.offset() or 0
            )
            if self._on_delivered is not None:
                self._on_delivered(len(self.delivered))

        return on_delivery
