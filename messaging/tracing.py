"""Spans of the Kafka side: one per batch and one per message, context in ``traceparent``.

Every loop here handles a batch in one transaction, so following OpenTelemetry's
messaging conventions a batch gets its own span, which cannot be the child of every
message's context and **links** to each instead. Links alone would end each
application's trace at the first consumer, though, and the product wants one trace per
application from the POST to the projection. So each batch records both:

- **the batch span**, ``<process> batch`` (kind CONSUMER; PRODUCER for the relay),
  ``messaging.batch.message_count`` set, linked to every message's context: the current
  span while the batch runs, so its database calls are its children. One trace per batch.
- **one span per message**, ``process <topic>`` (a consumer) or ``send <topic>`` (a
  producer), the child of the context the message carries, linked to the batch span. Its
  context is what the message's effect carries on (the next Kafka header, the next outbox
  row): this is the chain that makes an application's trace.

The message spans cover the whole batch (they start and end with it): that is the time
each message really waited for its transaction. With tracing off no span is made, and
:meth:`BatchTrace.traceparent` passes the received ``traceparent`` on unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from uuid import UUID

from confluent_kafka import Message
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from messaging.headers import EVENT_ID, TRACEPARENT, header_value
from runtime.kafka import Position, position_of
from runtime.tracing import parent_context, traceparent_of, tracer, tracing_enabled

SYSTEM = "kafka"


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One message of a batch as its span needs it."""

    name: str
    kind: SpanKind
    #: The ``traceparent`` the message came with (its parent), if any.
    traceparent: str | None
    attributes: Mapping[str, Any] = field(default_factory=dict)


def message_attributes(
    operation: str,
    topic: str | None,
    *,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | str | None = None,
    message_id: str | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """OpenTelemetry's messaging attributes of one Kafka message (absent values left out)."""
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    values: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": None if partition is None else str(partition),
        "messaging.kafka.offset": offset,
        "messaging.kafka.message.key": key,
        "messaging.message.id": message_id,
        "messaging.consumer.group.name": group,
    }
    return {name: value for name, value in values.items() if value is not None}


class BatchTrace:
    """The batch span and one span per message (:data:`MessageSpec`), started together.

    Use as a context manager: inside, the batch span is current; on exit every message
    span not yet ended is ended, then the batch span, with an error status if the block
    raised or :meth:`fail` was called. With tracing off it makes no span at all.
    """

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        messages: Sequence[MessageSpec],
        start_time: int | None = None,
    ) -> None:
        self._messages = messages
        self._spans: list[Span | None] = []
        self._open: set[int] = set()
        self._children: list[Span] = []
        self._error: str | None = None
        self._span: Span | None = None
        self._attached: object = None
        if not tracing_enabled():
            return
        start = time.time_ns() if start_time is None else start_time
        parents = [parent_context(spec.traceparent) for spec in messages]
        remote = [trace.get_current_span(p).get_span_context() for p in parents if p]
        self._span = tracer().start_span(
            name,
            kind=kind,
            attributes={**attributes, "messaging.batch.message_count": len(messages)},
            links=[Link(context) for context in remote],
            start_time=start,
        )
        batch_link = [Link(self._span.get_span_context())]
        for index, (spec, parent) in enumerate(zip(messages, parents, strict=True)):
            self._spans.append(
                tracer().start_span(
                    spec.name,
                    # No parent: a root of its own, never a child of whatever is current.
                    context=(
                        parent
                        if parent is not None
                        else trace.set_span_in_context(trace.INVALID_SPAN)
                    ),
                    kind=spec.kind,
                    attributes=spec.attributes,
                    links=batch_link,
                    start_time=start,
                )
            )
            self._open.add(index)

    def __enter__(self) -> BatchTrace:
        if self._span is not None:
            self._attached = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._attached is not None:
            otel_context.detach(self._attached)  # type: ignore[arg-type]
            self._attached = None
        if error is not None:
            self.fail(type(error).__name__)
            if self._span is not None and isinstance(error, Exception):
                self._span.record_exception(error)
        for child in self._children:
            self._end(child)
        for index in sorted(self._open):
            self.end_message(index)
        if self._span is not None:
            self._end(self._span)

    def fail(self, reason: str) -> None:
        """Mark the batch failed (``reason`` says how: no personal data); spans end later."""
        self._error = reason

    def traceparent(self, index: int) -> str | None:
        """What message ``index``'s effect carries on: its span's context, else its own."""
        span = self._spans[index] if self._spans else None
        if span is not None:
            own = traceparent_of(span.get_span_context())
            if own is not None:
                return own
        return self._messages[index].traceparent

    def span(self, index: int) -> Span | None:
        """Message ``index``'s span (None with tracing off)."""
        return self._spans[index] if self._spans else None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Add ``attributes`` to the batch span."""
        if self._span is not None:
            self._span.set_attributes(dict(attributes))

    def child(
        self, index: int, name: str, kind: SpanKind, attributes: Mapping[str, Any]
    ) -> str | None:
        """Start a span under message ``index``'s (ended with the batch); its ``traceparent``.

        With tracing off: what message ``index`` came with.
        """
        parent = self.span(index)
        if parent is None:
            return self._messages[index].traceparent
        span = tracer().start_span(
            name, context=trace.set_span_in_context(parent), kind=kind, attributes=attributes
        )
        self._children.append(span)
        return traceparent_of(span.get_span_context())

    def end_message(
        self, index: int, error: str | None = None, attributes: Mapping[str, Any] | None = None
    ) -> None:
        """End message ``index``'s span now, with ``attributes``; an error status with ``error``.

        Once only: a late call (a delivery report after its batch ended) does nothing.
        """
        if index not in self._open:
            return
        self._open.discard(index)
        span = self._spans[index] if self._spans else None
        if span is not None:
            if attributes:
                span.set_attributes(dict(attributes))
            self._end(span, error)

    def _end(self, span: Span, error: str | None = None) -> None:
        reason = error or self._error
        if reason is not None:
            span.set_status(Status(StatusCode.ERROR, reason))
        span.end()


#: The batch a consumer is handling in this thread, for its handler's event lookups.
_CURRENT: ContextVar[ConsumedBatch | None] = ContextVar("prequal_consumed_batch", default=None)


class ConsumedBatch(BatchTrace):
    """A consumer's batch: ``<consumer> batch`` and ``process <topic>`` per message.

    Inside the ``with`` block :func:`event_traceparent` and :func:`event_span` find a
    message by its event id (:meth:`name_events`), so a handler needs no extra argument.
    """

    def __init__(self, consumer: str, group: str, messages: Sequence[Message]) -> None:
        self._index: dict[Position, int] = {}
        self._events: dict[UUID, int] = {}
        specs = []
        topics: set[str] = set()
        on = tracing_enabled()
        for index, message in enumerate(messages):
            self._index[position_of(message)] = index
            topic = message.topic() or ""
            topics.add(topic)
            headers = message.headers()
            attributes = (
                message_attributes(
                    "process",
                    topic,
                    partition=message.partition(),
                    offset=message.offset(),
                    key=message.key(),
                    message_id=header_value(headers, EVENT_ID),
                    group=group,
                )
                if on
                else {}
            )
            specs.append(
                MessageSpec(
                    f"process {topic}",
                    SpanKind.CONSUMER,
                    header_value(headers, TRACEPARENT),
                    attributes,
                )
            )
        batch_attributes = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": group,
        }
        if len(topics) == 1:
            batch_attributes["messaging.destination.name"] = next(iter(topics))
        super().__init__(f"{consumer} batch", SpanKind.CONSUMER, batch_attributes, specs)
        self._token: Any = None

    def __enter__(self) -> ConsumedBatch:
        super().__enter__()
        self._token = _CURRENT.set(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _CURRENT.reset(self._token)
        super().__exit__(kind, error, traceback)

    def index_of(self, message: Message) -> int:
        """The position of ``message`` in this batch (KeyError for another batch's)."""
        return self._index[position_of(message)]

    def message_traceparent(self, message: Message) -> str | None:
        """What ``message``'s effect carries on (see :meth:`BatchTrace.traceparent`)."""
        return self.traceparent(self.index_of(message))

    def send(self, message: Message, topic: str, event_id: object) -> str | None:
        """A ``send <topic>`` span for what ``message`` produces; the product's ``traceparent``."""
        attributes = (
            message_attributes("send", topic, key=message.key(), message_id=str(event_id))
            if tracing_enabled()
            else {}
        )
        return self.child(self.index_of(message), f"send {topic}", SpanKind.PRODUCER, attributes)

    def name_events(self, pairs: Sequence[tuple[Message, UUID]]) -> None:
        """Remember which message carried each event id (the first, for a duplicate)."""
        for message, event_id in pairs:
            self._events.setdefault(event_id, self.index_of(message))

    def dead_lettered(self, message: Message) -> None:
        """End ``message``'s span as failed: it went to the dead-letter topic."""
        self.end_message(self.index_of(message), "dead-lettered")

    def event_index(self, event_id: UUID) -> int | None:
        """The index of the message that carried ``event_id`` (:meth:`name_events`)."""
        return self._events.get(event_id)


def event_traceparent(event_id: UUID) -> str | None:
    """The ``traceparent`` an effect of event ``event_id`` carries on, in a consumed batch.

    Its message span's context, or with tracing off what the message came with; None
    outside a :class:`ConsumedBatch` or for an event it does not know.
    """
    batch = _CURRENT.get()
    index = None if batch is None else batch.event_index(event_id)
    return None if batch is None or index is None else batch.traceparent(index)


@contextmanager
def event_span(event_id: UUID) -> Iterator[None]:
    """Make event ``event_id``'s message span current: a log line inside carries its trace id."""
    batch = _CURRENT.get()
    index = None if batch is None else batch.event_index(event_id)
    span = None if batch is None or index is None else batch.span(index)
    if span is None:
        yield
        return
    with trace.use_span(span, end_on_exit=False, record_exception=False):
        yield
