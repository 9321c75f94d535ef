"""messaging.tracing and its callers: a batch span, one span per message, traceparent carried on.

No broker or database: messages are built with confluent-kafka's ``Message`` constructor,
the relay produces to a fake producer, the decision handler writes to a fake connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
import pytest
from confluent_kafka import KafkaError, Message
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from decision_worker.handler import DecisionHandler
from messaging.headers import TRACEPARENT, Headers, header_value
from messaging.tracing import ConsumedBatch, event_traceparent
from outbox.relay import OutboxRow, PollingRelay
from runtime.settings import Settings
from runtime.tracing import configure_tracing, flush_tracing, shutdown_tracing
from tests.support.events import credit_report_event

FIRST = "00-11111111111111111111111111111111-aaaaaaaaaaaaaaaa-01"
SECOND = "00-22222222222222222222222222222222-bbbbbbbbbbbbbbbb-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    configure_tracing("unit", exporters=[exporter])
    yield exporter
    shutdown_tracing()


def _finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    flush_tracing()
    return list(exporter.get_finished_spans())


def _message(offset: int, traceparent: str | None, event_id: uuid.UUID | None = None) -> Message:
    headers: Headers = [("event_id", str(event_id or uuid.uuid4()).encode())]
    if traceparent is not None:
        headers.append((TRACEPARENT, traceparent.encode()))
    return Message(topic="in", partition=0, offset=offset, key=b"app", value=b"{}", headers=headers)


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def test_a_batch_span_links_every_message_and_each_message_span_continues_its_own_trace(
    spans: InMemorySpanExporter,
) -> None:
    first, second = _message(1, FIRST), _message(2, SECOND)

    with ConsumedBatch("decision-worker", "group", [first, second]) as batch:
        carried = [batch.message_traceparent(first), batch.message_traceparent(second)]

    finished = _finished(spans)
    [outer] = [s for s in finished if s.name == "decision-worker batch"]
    messages = [s for s in finished if s.name == "process in"]
    assert outer.kind is SpanKind.CONSUMER
    assert outer.attributes is not None
    assert outer.attributes["messaging.batch.message_count"] == 2
    assert {_hex(link.context.trace_id, 32) for link in outer.links} == {"1" * 32, "2" * 32}
    assert [_hex(s.context.trace_id, 32) for s in messages] == ["1" * 32, "2" * 32]
    assert [s.parent and _hex(s.parent.span_id, 16) for s in messages] == ["a" * 16, "b" * 16]
    for span, traceparent in zip(messages, carried, strict=True):
        assert (
            traceparent
            == f"00-{_hex(span.context.trace_id, 32)}-{_hex(span.context.span_id, 16)}-01"
        )
        assert [link.context.span_id for link in span.links] == [outer.context.span_id]
        assert span.attributes is not None
        assert span.attributes["messaging.consumer.group.name"] == "group"


def test_a_message_without_traceparent_starts_a_trace_of_its_own_not_the_batchs(
    spans: InMemorySpanExporter,
) -> None:
    message = _message(1, None)

    with ConsumedBatch("query-projector", "group", [message]):
        pass

    outer, span = sorted(_finished(spans), key=lambda s: s.name != "query-projector batch")
    assert span.parent is None
    assert span.context.trace_id != outer.context.trace_id


def test_with_tracing_off_a_batch_makes_no_span_and_passes_each_traceparent_on() -> None:
    event_id = uuid.uuid4()
    message = _message(1, FIRST, event_id)

    with ConsumedBatch("decision-worker", "group", [message, _message(2, None)]) as batch:
        batch.name_events([(message, event_id)])
        assert batch.message_traceparent(message) == FIRST
        assert batch.send(message, "out", "e") == FIRST
        assert event_traceparent(event_id) == FIRST
        assert batch.span(0) is None
    assert event_traceparent(event_id) is None


def test_a_failed_batch_and_a_dead_letter_end_their_spans_as_errors(
    spans: InMemorySpanExporter,
) -> None:
    poison, good = _message(1, FIRST), _message(2, SECOND)

    def fail_the_batch() -> None:
        with ConsumedBatch("decision-worker", "group", [poison, good]) as batch:
            batch.dead_lettered(poison)
            raise psycopg.OperationalError("no answer")

    with pytest.raises(psycopg.OperationalError):
        fail_the_batch()

    by_trace = {_hex(s.context.trace_id, 32): s for s in _finished(spans) if s.parent}
    assert by_trace["1" * 32].status.description == "dead-lettered"
    assert by_trace["2" * 32].status.status_code is StatusCode.ERROR
    assert by_trace["2" * 32].status.description == "OperationalError"


class _Producer:
    """Acknowledges each message on flush, with ``error`` if given."""

    def __init__(self, error: KafkaError | None = None) -> None:
        self.error = error
        self.sent: list[dict[str, Any]] = []
        self._callbacks: list[Any] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, **kwargs})
        self._callbacks.append(kwargs["on_delivery"])

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        for callback in self._callbacks:
            callback(self.error, Message(topic="t", partition=3, offset=41))
        self._callbacks.clear()
        return 0


def _row(traceparent: str | None) -> OutboxRow:
    return OutboxRow(
        id=uuid.uuid4(),
        topic="loan_applications_submitted",
        aggregateid="app-1",
        payload="{}",
        event_id=uuid.uuid4(),
        type="LoanApplicationSubmitted",
        correlation_id="corr",
        causation_id=None,
        traceparent=traceparent,
    )


def test_the_relay_sends_each_row_in_a_span_under_its_traceparent_ended_by_its_delivery(
    spans: InMemorySpanExporter,
) -> None:
    producer = _Producer()

    PollingRelay(Settings(), producer_factory=lambda: producer)._produce([_row(FIRST)])

    [sent] = producer.sent
    header = header_value(sent["headers"], TRACEPARENT)
    [send] = [s for s in _finished(spans) if s.name == "send loan_applications_submitted"]
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None
    assert _hex(send.parent.span_id, 16) == "a" * 16
    assert header == f"00-{'1' * 32}-{_hex(send.context.span_id, 16)}-01"
    assert send.attributes is not None
    assert send.attributes["messaging.destination.partition.id"] == "3"
    assert send.attributes["messaging.kafka.offset"] == 41


def test_a_row_kafka_refused_ends_its_send_span_as_an_error(spans: InMemorySpanExporter) -> None:
    producer = _Producer(KafkaError(KafkaError._MSG_TIMED_OUT))

    with pytest.raises(Exception, match="not delivered"):
        PollingRelay(Settings(), producer_factory=lambda: producer)._produce([_row(FIRST)])

    [send] = [s for s in _finished(spans) if s.name == "send loan_applications_submitted"]
    assert send.status.status_code is StatusCode.ERROR
    assert send.status.description == "not delivered: _MSG_TIMED_OUT"


def test_with_tracing_off_the_relay_passes_the_rows_traceparent_on() -> None:
    producer = _Producer()

    PollingRelay(Settings(), producer_factory=lambda: producer)._produce([_row(FIRST)])

    assert header_value(producer.sent[0]["headers"], TRACEPARENT) == FIRST


class _Connection:
    """Answers the decision UPDATE with every application; keeps the outbox rows inserted."""

    def __init__(self) -> None:
        self.inserted: list[dict[str, Any]] = []
        self._ids: list[uuid.UUID] = []

    def execute(self, _query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(i, datetime.now(UTC), "client") for i in params["ids"]]

    def cursor(self) -> _Connection:
        return self

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def executemany(self, _query: str, rows: list[dict[str, Any]]) -> None:
        self.inserted.extend(rows)


def _decide(report_traceparent: str | None) -> str | None:
    report = credit_report_event(uuid.uuid4(), 790)
    message = _message(1, report_traceparent, report.event_id)
    conn = _Connection()
    with ConsumedBatch("decision-worker", "group", [message]) as batch:
        batch.name_events([(message, report.event_id)])
        DecisionHandler("loan_application_decisions")(cast(psycopg.Connection, conn), [report])
    [row] = conn.inserted
    traceparent: str | None = row["traceparent"]
    return traceparent


def test_the_decided_events_outbox_row_continues_the_reports_trace(
    spans: InMemorySpanExporter,
) -> None:
    traceparent = _decide(FIRST)

    [process] = [s for s in _finished(spans) if s.name == "process in"]
    assert traceparent == f"00-{'1' * 32}-{_hex(process.context.span_id, 16)}-01"


def test_with_tracing_off_the_decided_events_outbox_row_keeps_the_reports_traceparent() -> None:
    traceparent = _decide(FIRST)

    assert traceparent == FIRST
