"""Structured JSON logging with correlation ids, trace ids and PAN masking.

Every log line is one JSON object on stdout. The correlation id of the request or event
being handled is bound in a context variable and added to every line; a line written
inside an OpenTelemetry span carries its ``trace_id`` and ``span_id`` (lowercase hex, as
trace viewers search for them), so a log line leads to its trace. Anything that
looks like a PAN is masked (``ABCDE***4F``) in every string value before it is written,
so personal data never reaches the logs whatever a caller passes in.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog
from opentelemetry import trace

# No word boundaries: a PAN glued to other characters (``pan_ABCDE1234F``, a URL-encoded
# ``%22ABCDE1234F``, ``IDABCDE1234F``) is still a PAN, and a stray match costs nothing.
# Any case: a client may send ``qwert1234z`` (a 422, but its path or body still reaches a
# log line or a problem body). Hex identifiers are left whole, not searched: a UUID or a
# trace id (lowercase hex) would otherwise hold a PAN-shaped run now and then (about one
# UUID in a hundred), and a masked id could no longer be looked up.
_PAN = re.compile(
    r"(?P<hex>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-f]{16,})"
    r"|(?P<letters>[A-Za-z]{5})(?P<digits>[0-9]{4})(?P<last>[A-Za-z])"
)


def _masked(match: re.Match[str]) -> str:
    if match.group("hex") is not None:
        return match.group("hex")
    return f"{match.group('letters')}***{match.group('digits')[-1]}{match.group('last')}"


def mask_pan(text: str) -> str:
    """Mask every PAN in ``text``, in any case: ``ABCDE1234F`` becomes ``ABCDE***4F``.

    UUIDs and runs of 16 or more lowercase hex digits (trace and span ids) are kept whole.
    """
    return _PAN.sub(_masked, text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_pan(value)
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v) for v in value]
    return value


def _mask_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        event_dict[key] = _mask_value(value)
    return event_dict


def _add_trace_ids(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # One context-variable read per line; outside a span (or with tracing off) the
    # current span is the invalid one and nothing is added.
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(context.span_id))
    return event_dict


def _orjson_dumps(obj: Any, default: Any) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure_logging(level: str, process: str) -> None:
    """Route structlog and the standard library's logging to one JSON stream on stdout.

    ``process`` names the emitting process on every line, so interleaved logs of
    ``make run`` stay attributable.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_process(process),
    ]
    renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            _mask_processor,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _mask_processor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # uvicorn's access log duplicates our request log line; its error log stays.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def _add_process(process: str) -> Any:
    def processor(
        _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("process", process)
        return event_dict

    return processor


def bind_correlation_id(correlation_id: str) -> None:
    """Attach ``correlation_id`` to every log line of the current task or thread."""
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)


def clear_context() -> None:
    """Forget everything bound with :func:`bind_correlation_id` and friends."""
    structlog.contextvars.clear_contextvars()


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger named for its module."""
    return structlog.get_logger(name)  # type: ignore[no-any-return]
