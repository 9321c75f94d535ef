"""Parking messages that can never succeed on the dead-letter topic, with the reason."""

from __future__ import annotations

from datetime import UTC, datetime

from confluent_kafka import Message

from messaging.headers import Headers, header_pairs
from runtime.logging import mask_pan

#: Headers the DLQ adds to a message's original headers.
SOURCE_TOPIC = "dlq_source_topic"
SOURCE_PARTITION = "dlq_source_partition"
SOURCE_OFFSET = "dlq_source_offset"
CONSUMER = "dlq_consumer"
REASON = "dlq_reason"
FAILED_AT = "dlq_failed_at"
_MAX_REASON = 1000


def dead_letter_headers(message: Message, consumer: str, reason: str) -> Headers:
    """The original headers plus where the message came from, who gave up, and why.

    The reason is PAN-masked and bounded: it is read by people and tools, and must not
    carry personal data or a whole payload.
    """
    original = header_pairs(message.headers())
    return [
        *original,
        (SOURCE_TOPIC, message.topic() or ""),
        (SOURCE_PARTITION, str(message.partition())),
        (SOURCE_OFFSET, str(message.offset())),
        (CONSUMER, consumer),
        (REASON, mask_pan(reason)[:_MAX_REASON]),
        (FAILED_AT, datetime.now(UTC).isoformat()),
    ]
