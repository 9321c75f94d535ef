"""The Kafka headers every event carries, identical whichever component produced it."""

from __future__ import annotations

Headers = list[tuple[str, str | bytes | None]]

EVENT_ID = "event_id"
EVENT_TYPE = "event_type"
CORRELATION_ID = "correlation_id"
CAUSATION_ID = "causation_id"
TRACEPARENT = "traceparent"
#: The outbox row a message came from: lets the CDC confirmer mark exactly that row.
OUTBOX_ROW_ID = "outbox_row_id"


def event_headers(
    event_id: object,
    event_type: str,
    correlation_id: str | None,
    causation_id: str | None,
    traceparent: str | None,
    outbox_row_id: object | None = None,
) -> Headers:
    """The event's identity and tracing as headers; absent values are left out."""
    values = {
        EVENT_ID: str(event_id),
        EVENT_TYPE: event_type,
        CORRELATION_ID: correlation_id,
        CAUSATION_ID: causation_id,
        TRACEPARENT: traceparent,
        OUTBOX_ROW_ID: None if outbox_row_id is None else str(outbox_row_id),
    }
    return [(name, value.encode()) for name, value in values.items() if value is not None]


def header_pairs(raw: Headers | dict[str, str | bytes | None] | None) -> Headers:
    """A message's headers as a list of pairs, whichever form the client returned."""
    if raw is None:
        return []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


def header_value(raw: Headers | dict[str, str | bytes | None] | None, name: str) -> str | None:
    """The text value of the first header called ``name``, if any."""
    for key, value in header_pairs(raw):
        if key == name and value is not None:
            return value.decode() if isinstance(value, bytes) else value
    return None
