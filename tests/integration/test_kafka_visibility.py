"""Reading back which records a read_committed reader sees, on the real broker.

The credit worker relies on this to settle a disagreement between the group's committed
offsets and its own commits (credit_worker/ledger.py).
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from runtime.kafka import Position, ensure_topics, position_of, producer_config, visible_positions
from runtime.settings import Settings


def _transaction(producer: Producer, topic: str, values: list[bytes]) -> list[Position]:
    """Produce ``values`` to partition 0 inside the open transaction; return their positions."""
    positions: list[Position] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        assert error is None, error
        positions.append(position_of(message))

    for value in values:
        producer.produce(topic, value=value, partition=0, on_delivery=delivered)
    producer.flush(10)
    assert len(positions) == len(values)
    return positions


@pytest.fixture
def producer(settings: Settings) -> Producer:
    ensure_topics(settings, [settings.topic_credit_reports])
    producer = Producer(producer_config(settings, **{"transactional.id": f"t-{uuid.uuid4()}"}))
    producer.init_transactions(10)
    return producer


def test_records_of_a_committed_transaction_are_visible_and_of_an_aborted_one_are_not(
    settings: Settings, producer: Producer
) -> None:
    topic = settings.topic_credit_reports
    producer.begin_transaction()
    committed = _transaction(producer, topic, [b"a", b"b"])
    producer.commit_transaction(10)
    producer.begin_transaction()
    aborted = _transaction(producer, topic, [b"c"])
    producer.abort_transaction(10)
    producer.begin_transaction()
    later = _transaction(producer, topic, [b"d"])
    producer.commit_transaction(10)

    seen = visible_positions(settings, [*committed, *aborted, *later], timeout_s=15)

    assert seen == {*committed, *later}


def test_a_record_of_a_transaction_still_open_gets_no_answer_but_a_timeout(
    settings: Settings, producer: Producer
) -> None:
    producer.begin_transaction()
    pending = _transaction(producer, settings.topic_credit_reports, [b"open"])
    try:
        with pytest.raises(KafkaException, match="could not read past"):
            visible_positions(settings, pending, timeout_s=2)
    finally:
        producer.abort_transaction(10)


def test_asking_about_no_records_reads_nothing(settings: Settings) -> None:
    assert visible_positions(settings, [], timeout_s=1) == set()
