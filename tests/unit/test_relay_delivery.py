"""The relay's delivery bookkeeping, with a fake producer (no broker, no database)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaError

from outbox.relay import DeliveryFailed, OutboxRow, PollingRelay
from runtime.settings import Settings


class FakeProducer:
    """Acknowledges or fails each message as told; fills its queue once if asked."""

    def __init__(
        self, error: KafkaError | None = None, full_once: bool = False, unacknowledged: int = 0
    ) -> None:
        self.error = error
        self.full_once = full_once
        self.unacknowledged = unacknowledged
        self.sent: list[dict[str, Any]] = []
        self.callbacks: list[Any] = []
        self.flushed = 0

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        *,
        on_delivery: Any = None,
        headers: Any = None,
    ) -> None:
        if self.full_once:
            self.full_once = False
            raise BufferError("queue full")
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})
        self.callbacks.append(on_delivery)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self.flushed += 1
        for callback in self.callbacks:
            callback(self.error, None)
        self.callbacks.clear()
        return self.unacknowledged


def _row(**overrides: Any) -> OutboxRow:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "topic": "t",
        "aggregateid": "agg-1",
        "payload": '{"a": 1}',
        "event_id": uuid.uuid4(),
        "type": "LoanApplicationSubmitted",
        "correlation_id": "corr",
        "causation_id": None,
        "traceparent": None,
    }
    values.update(overrides)
    return OutboxRow(**values)


def _relay(producer: FakeProducer) -> PollingRelay:
    return PollingRelay(Settings(), producer_factory=lambda: producer)


def test_a_row_becomes_a_message_keyed_by_its_aggregate_with_identity_headers() -> None:
    producer = FakeProducer()
    row = _row(traceparent="00-abc-def-01")

    _relay(producer)._produce([row])

    [sent] = producer.sent
    assert sent["key"] == b"agg-1"
    assert sent["value"] == b'{"a": 1}'
    assert dict(sent["headers"]) == {
        "event_id": str(row.event_id).encode(),
        "event_type": b"LoanApplicationSubmitted",
        "correlation_id": b"corr",
        "traceparent": b"00-abc-def-01",
        "outbox_row_id": str(row.id).encode(),
    }


def test_a_full_local_queue_is_waited_out_not_dropped() -> None:
    producer = FakeProducer(full_once=True)

    _relay(producer)._produce([_row(), _row()])

    assert len(producer.sent) == 2


def test_a_failed_delivery_fails_the_whole_batch() -> None:
    producer = FakeProducer(error=KafkaError(KafkaError._MSG_TIMED_OUT))

    with pytest.raises(DeliveryFailed, match="2 of 2 not delivered"):
        _relay(producer)._produce([_row(), _row()])


def test_messages_left_unacknowledged_fail_the_batch() -> None:
    producer = FakeProducer(unacknowledged=1)

    with pytest.raises(DeliveryFailed, match="unacknowledged"):
        _relay(producer)._produce([_row()])


def test_a_fatal_producer_error_replaces_the_producer() -> None:
    producers = [FakeProducer(error=KafkaError(KafkaError._FATAL, fatal=True)), FakeProducer()]
    relay = PollingRelay(Settings(), producer_factory=lambda: producers.pop(0))

    with pytest.raises(DeliveryFailed):
        relay._produce([_row()])
    relay._produce([_row()])

    assert producers == []
