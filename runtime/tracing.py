"""OpenTelemetry traces of one process: off unless asked for, exported in the background.

Each process's composition root calls :func:`configure_tracing` once with its name. It
reads the standard ``OTEL_*`` variables:

- ``OTEL_TRACES_EXPORTER``: ``otlp`` (OTLP over HTTP/protobuf, to
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` +
  ``/v1/traces``, else ``http://localhost:4318/v1/traces``; its headers, timeout and
  compression from the exporter's own ``OTEL_EXPORTER_OTLP_*`` variables), ``console``
  (one JSON document per span on stderr: stdout is the log), or ``none``. A comma list
  names several. **Unset means off** (the specification's default is ``otlp``; ours is
  off, so that a process never sends data anywhere nobody configured).
- ``OTEL_SDK_DISABLED=true`` turns tracing off whatever else is set.
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: ``parentbased_always_on``
  (default), ``parentbased_always_off``, ``parentbased_traceidratio``, ``always_on``,
  ``always_off``, ``traceidratio``.
- ``OTEL_BSP_*`` (the batch span processor's delay, queue and batch sizes) and
  ``OTEL_RESOURCE_ATTRIBUTES``. ``service.name`` is always the process's name.

Off, nothing is installed: the API's no-op tracer answers :func:`tracer`, no span is
made, FastAPI and psycopg stay uninstrumented, and the helpers below pass a received
``traceparent`` on unchanged. On, spans are queued by a ``BatchSpanProcessor`` and
exported by its own thread: a request or a loop only ever appends to a bounded queue
(spans beyond ``OTEL_BSP_MAX_QUEUE_SIZE`` are dropped, never waited for), and the
exporter's timeout (``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s) bounds that thread alone.
The provider is handed to what it traces, never made the API's global one (see
:func:`configure_tracing`).

Exported spans carry no personal data: every string is PAN-masked, and an exception is
exported by its type only — its message (a driver's message carries the statement's
parameters) and stack trace are dropped, as in the logs.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from runtime.logging import get_logger, mask_pan

if TYPE_CHECKING:
    from fastapi import FastAPI

TRACER_NAME = "prequal"
#: Requests not worth a trace: probes, scrapes and the documentation (regexes, searched in
#: the full URL by the FastAPI instrumentation).
EXCLUDED_URLS = r"/health(\?|$),/readyz(\?|$),/livez(\?|$),/metrics(\?|$),/docs,/redoc,/openapi"
#: How long the exit waits for the last spans to leave, in seconds: a stopping process
#: must not hang on an unreachable collector.
SHUTDOWN_TIMEOUT_S = 2.0
_OTLP_PROTOCOL = "http/protobuf"
_W3C = TraceContextTextMapPropagator()
_log = get_logger(__name__)


class TracingConfigurationError(ValueError):
    """An ``OTEL_*`` variable names something this process cannot do."""


@dataclass
class _Active:
    provider: TracerProvider
    processors: list[BatchSpanProcessor]
    tracer: trace.Tracer


@dataclass
class _State:
    """The process's tracing: ``active`` is None while it is off."""

    active: _Active | None = None
    exit_registered: bool = False


_state = _State()
_noop: trace.Tracer = trace.NoOpTracer()


# --- configuration ------------------------------------------------------------------------


def configure_tracing(service: str, exporters: Sequence[SpanExporter] | None = None) -> bool:
    """Trace this process as ``service`` when the environment asks for it; True if on.

    ``exporters`` replaces what ``OTEL_TRACES_EXPORTER`` names (tests pass an in-memory
    one); an empty environment and no ``exporters`` leave tracing off. Instruments psycopg
    (every connection made afterwards, SQLAlchemy's included). Calling it again replaces
    the previous set-up. Raises :class:`TracingConfigurationError` for an unknown exporter,
    sampler or OTLP protocol: a configuration error stops the process at its start.
    """
    shutdown_tracing()
    chosen = list(exporters) if exporters is not None else exporters_from_environment()
    if not chosen or _disabled():
        return False
    provider = TracerProvider(
        sampler=sampler_from_environment(),
        resource=Resource.create({SERVICE_NAME: service}),
        # Our own exit handler bounds the wait (SHUTDOWN_TIMEOUT_S); the SDK's would wait
        # up to 30 s for an unreachable collector.
        shutdown_on_exit=False,
    )
    processors = [BatchSpanProcessor(_Redacting(exporter)) for exporter in chosen]
    for processor in processors:
        provider.add_span_processor(processor)
    # Not made the API's global provider, on purpose: everything we trace gets it
    # explicitly, and FastAPI (0.163+) starts telemetry of its own, with spans around
    # every dependency and serialization, as soon as a global provider exists. The API
    # also allows one global per process, which a reconfigured process could not undo.
    _state.active = _Active(provider, processors, provider.get_tracer(TRACER_NAME))
    # Imported only when tracing is on (so for every import below): off costs nothing.
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor  # noqa: PLC0415

    PsycopgInstrumentor().instrument(tracer_provider=provider)
    if not _state.exit_registered:
        atexit.register(shutdown_tracing)
        _state.exit_registered = True
    _log.info(
        "tracing.on",
        service=service,
        exporters=[type(e).__name__ for e in chosen],
        sampler=provider.sampler.get_description(),
    )
    return True


def exporters_from_environment() -> list[SpanExporter]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (none when it is unset or ``none``).

    Raises :class:`TracingConfigurationError` for a name other than ``otlp``, ``console``
    and ``none``, or an OTLP protocol other than ``http/protobuf``.
    """
    names = [
        name.strip().lower()
        for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip() and name.strip().lower() != "none"
    ]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            exporters.append(_otlp_exporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter(service_name=None, out=sys.stderr))
        else:
            raise TracingConfigurationError(
                f"OTEL_TRACES_EXPORTER={name!r}: this process exports with 'otlp'"
                " (HTTP/protobuf), 'console' or 'none'"
            )
    return exporters


def _otlp_exporter() -> SpanExporter:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol.strip() not in ("", _OTLP_PROTOCOL):
        raise TracingConfigurationError(
            f"OTLP protocol {protocol!r}: only {_OTLP_PROTOCOL!r} is installed"
        )
    # Imported only when chosen: the exporter brings an HTTP client and protobuf.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()


def sampler_from_environment() -> Sampler:
    """``OTEL_TRACES_SAMPLER`` (and its ``_ARG``), with two rules for spans without a parent.

    A client span without a parent (a database call outside any traced operation: a
    health check, the relay's leadership and idle polls) is never sampled: every one would
    be a trace of its own, thousands an hour that say nothing. A span without a parent
    that links to a sampled span (a batch linking to its messages, a grouped rate-limit
    statement to its requests) is sampled, whatever the ratio: else most sampled traces
    would link to a batch or statement that was never exported. Raises
    :class:`TracingConfigurationError` for an unknown sampler or a ratio outside 0..1.
    """
    name = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    parent_based = name.startswith("parentbased_")
    kind = name.removeprefix("parentbased_")
    root: Sampler
    if kind == "always_on":
        root = ALWAYS_ON
    elif kind == "always_off":
        root = ALWAYS_OFF
    elif kind == "traceidratio":
        root = TraceIdRatioBased(_ratio(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")))
    else:
        raise TracingConfigurationError(f"OTEL_TRACES_SAMPLER={name!r} is not a known sampler")
    return _RootsFollowTheirLinks(ParentBased(root) if parent_based else root)


def _ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise TracingConfigurationError(f"OTEL_TRACES_SAMPLER_ARG={text!r} is not a ratio 0..1")
    return ratio


def _disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def shutdown_tracing(timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Export what is queued (waiting at most ``timeout_s`` in all), then stop tracing.

    Registered to run at exit; idempotent. Uninstruments psycopg.
    """
    active, _state.active = _state.active, None
    if active is None:
        return
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor  # noqa: PLC0415

    PsycopgInstrumentor().uninstrument()

    def shut_down() -> None:
        for processor in active.processors:
            processor.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK

    # The SDK's own shutdown waits up to 30 s for an exporter that does not answer; its
    # export thread is a daemon, so leaving it behind costs nothing at exit.
    stopping = threading.Thread(target=shut_down, name="tracing-shutdown", daemon=True)
    stopping.start()
    stopping.join(timeout_s)


def flush_tracing() -> None:
    """Export every span ended so far, now (tests; the processor's thread does it anyway)."""
    if _state.active is not None:
        _state.active.provider.force_flush()


def tracing_enabled() -> bool:
    """Whether :func:`configure_tracing` turned tracing on in this process."""
    return _state.active is not None


def tracer() -> trace.Tracer:
    """Our tracer; the API's no-op tracer while tracing is off."""
    return _noop if _state.active is None else _state.active.tracer


def instrument_app(app: FastAPI) -> None:
    """Give every request of ``app`` a server span (OpenTelemetry's FastAPI instrumentation).

    The span continues the client's W3C ``traceparent`` when it sent one, is the current
    span of everything the request does, and names the route template
    (``POST /applications``). Probes, scrapes and the documentation are not traced
    (:data:`EXCLUDED_URLS`). Does nothing while tracing is off.
    """
    if _state.active is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: PLC0415

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_state.active.provider,
        excluded_urls=EXCLUDED_URLS,
        # One span per request: not one more per ASGI message sent or received.
        exclude_spans=["receive", "send"],
        # Should an operator capture request headers, never the credentials.
        http_capture_headers_sanitize_fields=["authorization", "cookie", "set-cookie"],
    )


# --- W3C trace context --------------------------------------------------------------------


def traceparent_of(context: SpanContext) -> str | None:
    """``context`` as a W3C ``traceparent`` header value, or None if it is not valid."""
    if not context.is_valid:
        return None
    flags = int(context.trace_flags)
    return f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}-{flags:02x}"


def current_traceparent() -> str | None:
    """The current span's ``traceparent``, or None outside any span (or tracing off)."""
    return traceparent_of(trace.get_current_span().get_span_context())


def parent_context(traceparent: str | None) -> Context | None:
    """The context to start a child span in, from a ``traceparent``; None if absent or bad."""
    if not traceparent:
        return None
    context = _W3C.extract({"traceparent": traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def span_context(traceparent: str | None) -> SpanContext | None:
    """The remote span a ``traceparent`` names (to link to), or None if absent or bad."""
    context = parent_context(traceparent)
    return None if context is None else trace.get_current_span(context).get_span_context()


# --- sampling and redaction ---------------------------------------------------------------


class _RootsFollowTheirLinks(Sampler):
    """Parentless spans: client ones dropped, ones linking to a sampled span sampled.

    Everything else as ``delegate`` decides (see :func:`sampler_from_environment`).
    """

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        """DROP or RECORD_AND_SAMPLE for a parentless span (see the class), else the delegate's.

        A parentless client span is dropped; a parentless span with a sampled link sampled.
        """
        if not trace.get_current_span(parent_context).get_span_context().is_valid:
            if kind is SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            if any(link.context.trace_flags.sampled for link in links or ()):
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """The delegate's description, wrapped."""
        return f"RootsFollowTheirLinks{{{self._delegate.get_description()}}}"


class _Redacting(SpanExporter):
    """Exports through ``inner`` copies of the spans without personal data.

    Runs on the batch processor's thread, never on a request's or a loop's.
    """

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Redact, then export; the inner exporter's result."""
        return self._inner.export([_redacted(span) for span in spans])

    def shutdown(self) -> None:
        """Shut the inner exporter down."""
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner exporter."""
        return self._inner.force_flush(timeout_millis)


#: What an exception event keeps: its type, never its message or stack trace.
_EXCEPTION_KEEPS = ("exception.type", "exception.escaped")


def _redacted(span: ReadableSpan) -> ReadableSpan:
    events = [_redacted_event(event) for event in span.events]
    exception_types = [
        str(event.attributes.get("exception.type", ""))
        for event in span.events
        if event.name == "exception" and event.attributes
    ]
    status = span.status
    if status.description:
        # The SDK writes "Type: message" for an exception: keep the type alone.
        description = exception_types[0] if exception_types else mask_pan(status.description)
        status = Status(status.status_code, description)
    return ReadableSpan(
        name=mask_pan(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_masked(span.attributes),
        events=events,
        links=[Link(link.context, _masked(link.attributes)) for link in span.links],
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _redacted_event(event: Event) -> Event:
    attributes: Mapping[str, Any] = event.attributes or {}
    if event.name == "exception":
        attributes = {k: v for k, v in attributes.items() if k in _EXCEPTION_KEEPS}
    return Event(event.name, _masked(attributes), event.timestamp)


def _masked(attributes: Attributes) -> dict[str, Any]:
    return {key: _masked_value(value) for key, value in (attributes or {}).items()}


def _masked_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_pan(value)
    if isinstance(value, tuple | list):
        return tuple(mask_pan(v) if isinstance(v, str) else v for v in value)
    return value
