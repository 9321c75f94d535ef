"""A transactional Kafka call that never returns does not hang the credit worker (deadline)."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from credit_worker.deadline import StuckCall, call_with_deadline


def test_a_call_that_returns_in_time_just_returns() -> None:
    calls: list[str] = []

    call_with_deadline(lambda: calls.append("done"), 5)

    assert calls == ["done"]


def test_a_call_blocked_past_its_deadline_is_abandoned_as_stuck() -> None:
    release = threading.Event()
    started = time.monotonic()

    def blocked() -> None:
        release.wait(30)

    with pytest.raises(StuckCall, match="stuck"):
        call_with_deadline(blocked, 0.2)

    assert time.monotonic() - started < 5
    release.set()


def test_a_kafka_error_raised_by_the_call_reaches_the_caller() -> None:
    def fail() -> None:
        raise KafkaException(KafkaError(KafkaError._FENCED))

    with pytest.raises(KafkaException) as raised:
        call_with_deadline(fail, 5)

    assert raised.value.args[0].code() == KafkaError._FENCED
