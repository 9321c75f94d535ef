"""runtime.tracing: off by default, the exporter the OTEL_* variables name, trace ids in logs.

No server is needed: spans go to the SDK's in-memory exporter, or over HTTP to the tiny
OTLP collector of tests/support/otlp.py.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from contextlib import redirect_stdout

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from runtime.logging import configure_logging, get_logger
from runtime.tracing import (
    TracingConfigurationError,
    configure_tracing,
    current_traceparent,
    flush_tracing,
    parent_context,
    shutdown_tracing,
    span_context,
    traceparent_of,
    tracer,
    tracing_enabled,
)
from tests.support.otlp import otlp_collector
from tests.support.processes import wait_until

REMOTE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from an environment without OTEL_* and ends with tracing off."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    yield
    shutdown_tracing()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Tracing on, as process ``unit``, into memory (read after :func:`flush_tracing`)."""
    exporter = InMemorySpanExporter()
    assert configure_tracing("unit", exporters=[exporter])
    return exporter


def _is_instrumented(method: object) -> bool:
    return hasattr(method, "__wrapped__")


def test_tracing_is_off_when_no_exporter_is_configured() -> None:
    assert configure_tracing("unit") is False

    assert not tracing_enabled()
    with tracer().start_as_current_span("work") as span:
        assert not span.is_recording()
        assert current_traceparent() is None
    assert not _is_instrumented(psycopg.Connection.connect)


@pytest.mark.parametrize(
    "variables",
    [
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
    ],
    ids=["exporter none", "sdk disabled", "endpoint alone"],
)
def test_none_the_sdk_switch_or_an_endpoint_alone_keep_tracing_off(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    assert configure_tracing("unit") is False
    assert not tracing_enabled()


@pytest.mark.parametrize(
    "variables",
    [
        {"OTEL_TRACES_EXPORTER": "jaeger"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"},
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "2",
        },
    ],
    ids=["unknown exporter", "grpc", "unknown sampler", "ratio above 1"],
)
def test_a_configuration_this_process_cannot_honour_stops_it_at_its_start(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(TracingConfigurationError):
        configure_tracing("unit")
    assert not tracing_enabled()


def test_otlp_sends_the_process_spans_to_the_endpoint_the_standard_variables_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with otlp_collector() as collector:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")

        assert configure_tracing("credit-worker") is True
        assert _is_instrumented(psycopg.Connection.connect)
        with tracer().start_as_current_span("work", kind=SpanKind.CONSUMER):
            pass
        wait_until(lambda: bool(collector.snapshot()), 10)

    [span] = collector.snapshot()
    assert (span.service, span.name, span.kind) == ("credit-worker", "work", "CONSUMER")


def test_the_console_exporter_writes_spans_to_stderr_never_into_the_log_on_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert configure_tracing("query-api") is True

    with tracer().start_as_current_span("GET /x"):
        pass
    flush_tracing()

    captured = capsys.readouterr()
    assert '"name": "GET /x"' in captured.err
    assert '"service.name": "query-api"' in captured.err
    assert "GET /x" not in captured.out


def test_log_lines_written_inside_a_span_carry_its_trace_and_span_ids(
    spans: InMemorySpanExporter,
) -> None:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        configure_logging("INFO", "unit")
        get_logger("t").info("outside")
        with tracer().start_as_current_span("work") as span:
            get_logger("t").info("inside")
            logging.getLogger("stdlib").warning("inside too")
            context = span.get_span_context()

    outside, inside, stdlib = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert "trace_id" not in outside
    assert "span_id" not in outside
    for line in (inside, stdlib):
        assert line["trace_id"] == f"{context.trace_id:032x}"
        assert line["span_id"] == f"{context.span_id:016x}"


def test_a_span_continues_a_received_traceparent_and_yields_its_own() -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("unit", exporters=[exporter])

    with tracer().start_as_current_span("child", context=parent_context(REMOTE)) as span:
        own = current_traceparent()

    context = span.get_span_context()
    assert own == traceparent_of(context)
    assert own is not None
    assert own.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert own != REMOTE
    flush_tracing()
    [finished] = exporter.get_finished_spans()
    assert finished.parent is not None
    assert f"{finished.parent.span_id:016x}" == REMOTE[36:52]
    assert parent_context("00-not-a-traceparent") is None
    assert parent_context(None) is None


def test_a_database_call_outside_any_span_is_not_recorded_but_one_inside_is(
    spans: InMemorySpanExporter,
) -> None:
    orphan = tracer().start_span("select", kind=SpanKind.CLIENT)
    with tracer().start_as_current_span("batch", kind=SpanKind.CONSUMER) as batch:
        child = tracer().start_span("select", kind=SpanKind.CLIENT)
        recording = (orphan.is_recording(), batch.is_recording(), child.is_recording())

    assert recording == (False, True, True)


def test_the_sampler_follows_otel_traces_sampler_and_respects_the_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    configure_tracing("unit", exporters=[InMemorySpanExporter()])

    root = tracer().start_span("root", kind=SpanKind.SERVER)
    child_of_sampled = tracer().start_span("child", context=parent_context(REMOTE))
    unsampled_remote = REMOTE[:-2] + "00"
    child_of_unsampled = tracer().start_span("child", context=parent_context(unsampled_remote))

    assert not root.is_recording()
    assert child_of_sampled.is_recording()
    assert not child_of_unsampled.is_recording()


def test_a_root_that_links_to_a_sampled_span_is_sampled_whatever_the_ratio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    configure_tracing("unit", exporters=[InMemorySpanExporter()])
    sampled = span_context(REMOTE)
    unsampled = span_context(REMOTE[:-2] + "00")
    assert sampled is not None
    assert unsampled is not None

    # A grouped statement or a batch: a root of its own, linked to what it serves.
    serving_a_sampled_one = tracer().start_span("take", links=[Link(unsampled), Link(sampled)])
    serving_unsampled_ones = tracer().start_span("take", links=[Link(unsampled)])
    orphan_database_call = tracer().start_span(
        "select", kind=SpanKind.CLIENT, links=[Link(sampled)]
    )

    assert serving_a_sampled_one.is_recording()
    assert not serving_unsampled_ones.is_recording()
    assert not orphan_database_call.is_recording()


def test_exported_spans_keep_an_exceptions_type_but_never_its_message_or_a_pan(
    spans: InMemorySpanExporter,
) -> None:
    with (
        pytest.raises(ValueError, match="income"),
        tracer().start_as_current_span("POST /applications", attributes={"url": "/x?p=ABCDE1234F"}),
    ):
        raise ValueError("duplicate key (pan_number)=(ABCDE1234F) income 75000")
    flush_tracing()

    [span] = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["url"] == "/x?p=ABCDE***4F"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError"
    [event] = span.events
    assert event.name == "exception"
    assert dict(event.attributes or {}) == {
        "exception.type": "ValueError",
        "exception.escaped": "False",
    }
    assert "75000" not in span.to_json()
    assert "ABCDE1234F" not in span.to_json()


def test_configuring_again_replaces_the_previous_setup_and_shutdown_turns_tracing_off(
    spans: InMemorySpanExporter,
) -> None:
    second = InMemorySpanExporter()
    configure_tracing("again", exporters=[second])
    with tracer().start_as_current_span("work"):
        pass
    flush_tracing()
    shutdown_tracing()

    assert [s.resource.attributes["service.name"] for s in second.get_finished_spans()] == ["again"]
    assert spans.get_finished_spans() == ()
    assert not tracing_enabled()
    assert not _is_instrumented(psycopg.Connection.connect)
    assert not trace.get_current_span().get_span_context().is_valid
    # Never the global provider: FastAPI's own telemetry would start with one, for good.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
