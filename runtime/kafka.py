"""Kafka client configuration and topic administration, from Settings."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from runtime.logging import get_logger
from runtime.settings import Settings

_log = get_logger(__name__)

# (topic, partition, offset) of one record.
Position = tuple[str, int, int]


def client_config(settings: Settings) -> dict[str, Any]:
    """What every Kafka client shares: the brokers, and librdkafka's log as JSON lines."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "logger": logging.getLogger("librdkafka"),
        # Client-side deadlines (issue 11): a broker that is connected but silent (a long
        # GC pause, a blackholed path) must be noticed in seconds, not at the defaults.
        # A request without an answer fails after 10 s instead of 60 s; librdkafka then
        # closes the connection and reconnects, which is what heals a blackholed path.
        "socket.timeout.ms": 10_000,
        # Connecting (TCP + handshake) to a broker that does not answer: 5 s, not 30 s.
        "socket.connection.setup.timeout.ms": 5_000,
        # TCP keepalives: an idle connection to a vanished host is eventually dropped by
        # the kernel instead of looking alive forever.
        "socket.keepalive.enable": True,
        # Reconnect with librdkafka's jittered exponential backoff, capped at 2 s (default
        # 10 s) so that a healed broker is back in use within about two seconds.
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 2_000,
    }


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent, acks=all producer: no duplicates or reordering from its own retries."""
    config: dict[str, Any] = {
        **client_config(settings),
        "enable.idempotence": True,
        # Idempotence implies it; stated because the guarantee rests on it: a write is
        # acknowledged once every in-sync replica has it, at least min.insync.replicas
        # (2 of 3 on the cluster), so losing the leader right after loses nothing.
        "acks": "all",
        # The Java client's partitioner (murmur2), as Kafka Connect uses: a key lands on
        # the same partition whichever relay produced it, so per-application order holds
        # across a switch of relay. librdkafka's default (crc32-based) would not.
        "partitioner": "murmur2_random",
        "linger.ms": 2,
        "compression.type": "lz4",
        # The deadline of one message, retries included: past it the delivery report
        # says failed and the relay rolls its batch back (the rows stay unpublished).
        "message.timeout.ms": settings.relay_delivery_timeout_ms,
        # One produce request's deadline: shorter than the message's, so a request lost
        # on a silent connection is retried on a new one before the message expires.
        "request.timeout.ms": min(10_000, settings.relay_delivery_timeout_ms),
    }
    config.update(overrides)
    if "transaction.timeout.ms" in config:
        # librdkafka refuses a transactional producer whose socket timeout exceeds the
        # transaction timeout (+100 ms): a request may not outlive its transaction.
        config["socket.timeout.ms"] = min(
            config["socket.timeout.ms"], int(config["transaction.timeout.ms"]) + 100
        )
    return config


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that commits only what its owner says, and reads committed data only."""
    config: dict[str, Any] = {
        **client_config(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(settings.kafka_session_timeout_ms // 5, 100),
        # A worker that stops polling (its database frozen, retries backing off) keeps
        # its partitions for 5 minutes (the default, stated): long enough to ride out
        # an outage without a rebalance; a redelivery after one is absorbed by the inbox.
        "max.poll.interval.ms": 300_000,
    }
    config.update(overrides)
    return config


def next_batch(
    consumer: Consumer, max_messages: int, timeout_s: float = 0.25, linger_s: float = 0.0
) -> list[Message]:
    """Wait up to ``timeout_s`` for one message, then gather more for ``linger_s`` at most.

    ``Consumer.consume(n, timeout)`` alone waits until *n* messages arrived or the
    timeout passed, so at a low rate every message would sit out the whole timeout in
    every stage of the pipeline. Blocking only for the first message keeps an idle
    pipeline fast; the short linger after it lets a busy one put more messages in each
    transaction (fewer commits, fewer Kafka transactions, less CPU per message).
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    if max_messages <= 1:
        return [first]
    return [first, *consumer.consume(max_messages - 1, timeout=linger_s)]


def next_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """For each partition in ``messages``, the offset after the last one: what to commit."""
    highest: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        highest[key] = max(highest.get(key, -1), offset)
    return [
        TopicPartition(topic, partition, offset + 1)
        for (topic, partition), offset in highest.items()
    ]


def position_of(message: Message) -> Position:
    """Where ``message`` sits: its topic, partition and offset."""
    return (message.topic() or "", message.partition() or 0, message.offset() or 0)


def first_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """For each partition in ``messages``, the first offset: where to rewind to."""
    lowest: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        lowest[key] = min(lowest.get(key, offset), offset)
    return [
        TopicPartition(topic, partition, offset) for (topic, partition), offset in lowest.items()
    ]


def admin_config(settings: Settings) -> dict[str, Any]:
    """Configuration of an admin client."""
    return client_config(settings)


def all_topics(settings: Settings) -> list[str]:
    """Every topic prequal uses."""
    return [
        settings.topic_submitted,
        settings.topic_credit_reports,
        settings.topic_decisions,
        settings.topic_dlq,
    ]


def ensure_topics(
    settings: Settings, topics: list[str] | None = None, timeout_s: float = 15.0
) -> None:
    """Create the topics that do not exist yet (the broker never auto-creates them).

    Each gets ``topic_replication_factor`` replicas; from 3 on, ``min.insync.replicas``
    is 2, so that an ``acks=all`` write survives the loss of any one broker and one broker
    may be down without refusing writes. Waits (up to ``timeout_s``) for as many brokers
    as replicas: a cluster starting up registers its brokers one by one, and a topic
    created meanwhile would be refused. Raises :class:`KafkaException` when the brokers
    cannot be reached in time.
    """
    admin = AdminClient(admin_config(settings))
    wanted = topics if topics is not None else all_topics(settings)
    metadata = admin.list_topics(timeout=timeout_s)
    missing = [t for t in wanted if t not in metadata.topics]
    if not missing:
        return
    deadline = time.monotonic() + timeout_s
    while len(metadata.brokers) < settings.topic_replication_factor:
        if time.monotonic() >= deadline:
            break  # create_topics says why: fewer brokers than replicas
        time.sleep(0.5)
        metadata = admin.list_topics(timeout=timeout_s)
    config = {"retention.ms": str(settings.topic_retention_ms)}
    if settings.topic_replication_factor > 1:
        config["min.insync.replicas"] = str(settings.topic_min_insync_replicas)
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                config=config,
            )
            for topic in missing
        ],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            _log.info("kafka.topic_created", topic=topic)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def watermarks(consumer: Consumer, partition: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """A partition's low and high offsets, waiting out a leader election (seconds).

    Right after a topic is created (or a broker restarted) the partition may have no
    leader for a moment; the broker says so with a retriable error, so ask again.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=timeout_s, cached=False)
            return int(low), int(high)
        except KafkaException as error:
            kafka_error = error.args[0] if error.args else None
            retriable = isinstance(kafka_error, KafkaError) and (
                kafka_error.retriable() or kafka_error.code() in LEADERLESS
            )
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


#: What a partition without a known leader answers; retriable, though not flagged so.
LEADERLESS = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def kafka_check(settings: Settings) -> Callable[[], None]:
    """A health check that asks the broker for its metadata within two seconds."""
    admin = AdminClient(admin_config(settings))

    def check() -> None:
        admin.list_topics(timeout=2.0)

    return check


class UnreadablePositions(KafkaException):
    """A ``read_committed`` reader could not get past some positions in time."""

    def __init__(self, partitions: set[tuple[str, int]], timeout_s: float) -> None:
        super().__init__(
            KafkaError(
                KafkaError._TIMED_OUT,
                f"could not read past {sorted(partitions)} in {timeout_s:.0f} s: "
                "a transaction is open there, or the broker is away",
            )
        )
        self.partitions = partitions


def visible_positions(
    settings: Settings, positions: Iterable[Position], timeout_s: float
) -> set[Position]:
    """Which of the (topic, partition, offset) records a ``read_committed`` reader sees.

    A record of a committed transaction is seen; one of an aborted transaction is skipped
    by the reader, which moves past it. Raises :class:`UnreadablePositions` when a
    position cannot be passed in time: its transaction is still open, or the broker is
    away, so neither answer would be true yet.
    """
    wanted = set(positions)
    span: dict[tuple[str, int], tuple[int, int]] = {}
    for topic, partition, offset in wanted:
        low, high = span.get((topic, partition), (offset, offset))
        span[(topic, partition)] = (min(low, offset), max(high, offset))
    if not span:
        return set()
    consumer = Consumer(
        consumer_config(
            settings, f"prequal-verify-{uuid.uuid4()}", **{"enable.partition.eof": True}
        )
    )
    seen: set[Position] = set()
    try:
        consumer.assign([TopicPartition(t, p, low) for (t, p), (low, _) in span.items()])
        pending = set(span)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise UnreadablePositions(pending, timeout_s)
            message = consumer.poll(0.1)
            if message is None:
                continue
            topic, partition, offset = position_of(message)
            key = (topic, partition)
            error = message.error()
            if error is None:
                seen.add((topic, partition, offset))
                next_offset = offset + 1
            elif error.code() == KafkaError._PARTITION_EOF:
                # The end of what a read_committed reader may see (the last stable
                # offset); aborted records before it were skipped.
                next_offset = consumer.position([TopicPartition(topic, partition)])[0].offset
            else:
                raise KafkaException(error)
            # Past the highest position: every position below is decided.
            if key in span and next_offset > span[key][1]:
                pending.discard(key)
    finally:
        consumer.close()
    return seen & wanted
