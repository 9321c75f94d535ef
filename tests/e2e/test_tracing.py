"""One POST, one trace: the six processes export their spans to one OTLP/HTTP collector.

The six console scripts run as real processes (tests/support/pipeline.py) with the
standard variables a deployment would set — ``OTEL_TRACES_EXPORTER=otlp``,
``OTEL_EXPORTER_OTLP_ENDPOINT`` — pointing at a tiny collector in the test
(tests/support/otlp.py) that decodes what OpenTelemetry's own exporter sends. A client
sends its ``traceparent`` with the POST and with its status GETs, as a traced client
would; every span of the application's journey must land in that one trace.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from runtime.settings import RelayKind, Settings
from tests.conftest import Spawn
from tests.support.auth import bearer
from tests.support.otlp import CollectedSpan, Collector, otlp_collector
from tests.support.pipeline import PROCESSES, Pipeline, start_pipeline
from tests.support.polling import decided
from tests.support.processes import wait_until

#: (PAN, client trace id): two applications, two traces.
APPLICATIONS = [
    ("ABCDE1234F", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("FGHIJ5678K", "5cf92f3577b34da6a3ce929d0e0e4737"),
]
CLIENT_SPAN = "00f067aa0ba902b7"


def journey(settings: Settings) -> dict[str, set[str]]:
    """The spans of an application's journey, by process (the database calls come on top)."""
    submitted, reports = settings.topic_submitted, settings.topic_credit_reports
    decisions = settings.topic_decisions
    return {
        "command-api": {"POST /applications"},
        "outbox-relay": {f"send {submitted}", f"send {decisions}"},
        "credit-worker": {f"process {submitted}", f"send {reports}"},
        "decision-worker": {f"process {reports}"},
        "query-projector": {f"process {submitted}", f"process {decisions}"},
        "query-api": {"GET /applications/{application_id}/status"},
    }


@pytest.fixture
def collector() -> Iterator[Collector]:
    """The collector every process exports to (outlives them: requested first)."""
    with otlp_collector() as running:
        yield running


@pytest.fixture
def pipeline(
    collector: Collector, settings: Settings, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> Pipeline:
    """The six processes, tracing on, exporting to ``collector`` every 100 ms.

    At DEBUG, so that the decision worker writes its per-decision line (with trace ids).
    """
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    return start_pipeline(
        settings.model_copy(update={"relay": RelayKind.POLLING, "log_level": "DEBUG"}), spawn
    )


async def _submit_and_follow(pipeline: Pipeline, pan: str, trace_id: str) -> str:
    """POST an application and poll its status to the decision, all in trace ``trace_id``."""
    headers = {**bearer(pipeline.settings), "traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"}
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        response = await http.post(
            f"{pipeline.command}/applications",
            json={
                "pan_number": pan,
                "applicant_name": "Traced Applicant",
                "monthly_income_inr": "75000.00",
                "loan_amount_inr": "500000.00",
                "loan_type": "PERSONAL",
            },
        )
        assert response.status_code == 202, response.text
        await decided(http, response.headers["location"], 30)
    application_id: str = response.json()["application_id"]
    return application_id


def _journey_complete(collector: Collector, trace_id: str, expected: dict[str, set[str]]) -> bool:
    spans = collector.trace(trace_id)
    names: dict[str, set[str]] = {}
    for span in spans:
        names.setdefault(span.service, set()).add(span.name)
    # A parent ends after its children, a batch span after its messages' spans: either
    # may reach the collector one export later.
    ids = {span.span_id for span in spans} | {CLIENT_SPAN}
    parents_in = all(span.parent_id in ids for span in spans)
    batches_in = not _batches_without_database_spans(collector.snapshot(), trace_id)
    return (
        parents_in
        and batches_in
        and all(names_of <= names.get(service, set()) for service, names_of in expected.items())
    )


def _wait_for_journey(collector: Collector, trace_id: str, settings: Settings) -> None:
    """Wait until every span of :func:`journey` arrived (each process exports every 100 ms)."""
    expected = journey(settings)
    wait_until(
        lambda: _journey_complete(collector, trace_id, expected),
        20,
        lambda: "\n".join(f"{s.service}: {s.name}" for s in collector.trace(trace_id)),
    )


def _log_lines(pipeline: Pipeline, process: str) -> list[dict[str, Any]]:
    lines = []
    for line in pipeline.processes[process].log().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue  # a line some library printed
    return lines


def _span_id(traceparent: str) -> str:
    return traceparent.split("-")[2]


async def test_one_post_gives_one_trace_whose_spans_cover_all_six_processes(
    pipeline: Pipeline, collector: Collector, db: psycopg.Connection
) -> None:
    ids = await asyncio.gather(
        *(_submit_and_follow(pipeline, pan, trace) for pan, trace in APPLICATIONS)
    )
    for _, trace_id in APPLICATIONS:
        _wait_for_journey(collector, trace_id, pipeline.settings)

    everything = collector.snapshot()
    by_id = {span.span_id: span for span in everything}
    for application_id, (pan, trace_id) in zip(ids, APPLICATIONS, strict=True):
        spans = collector.trace(trace_id)
        assert {span.service for span in spans} == set(PROCESSES)
        # One tree: every span's parent is in the trace, but the client's own span.
        for span in spans:
            assert span.parent_id == CLIENT_SPAN or span.parent_id in by_id, span
            assert by_id.get(span.parent_id, span).trace_id == trace_id
        # Only this application's messages: batches may mix, message spans never do.
        keys = {s.attributes.get("messaging.kafka.message.key") for s in spans} - {None}
        assert keys == {application_id}
        _assert_the_rows_continue_the_trace(db, application_id, spans)
        _assert_database_calls_are_traced(spans, everything, trace_id)
        _assert_log_lines_lead_to_the_trace(pipeline, application_id, trace_id)
        # Nothing personal left the processes: PANs are masked, exception messages dropped.
        assert not any(pan.encode() in body for body in collector.bodies)
    # Concurrent submits share one grouped statement (command_api/group_commit.py), traced
    # under the request that flushed the group: in one of the traces, not in each.
    traces = {trace_id for _, trace_id in APPLICATIONS}
    posts = {s.span_id for s in everything if s.name == "POST /applications"}
    assert any(
        s.service == "command-api"
        and s.kind == "CLIENT"
        and s.attributes.get("db.system")
        and s.parent_id in posts
        and s.trace_id in traces
        for s in everything
    )
    # Each request's rate-limit wait links to the statement that served it: a trace of its
    # own (it serves several requests), with its database span (runtime/rate_limit.py).
    takes = {s.span_id for s in everything if s.name == "rate-limit take"}
    waits = [s for s in everything if s.name == "rate-limit wait" and s.trace_id in traces]
    assert {s.service for s in waits} == {"command-api", "query-api"}
    assert all(any(link in takes for _, link in wait.links) for wait in waits)
    statements = {s.parent_id for s in everything if s.kind == "CLIENT"}
    assert takes
    assert takes <= statements


def _assert_the_rows_continue_the_trace(
    db: psycopg.Connection, application_id: str, spans: list[CollectedSpan]
) -> None:
    rows: dict[str, str] = dict(
        db.execute(
            "SELECT type, traceparent FROM outbox WHERE aggregateid = %s", (application_id,)
        ).fetchall()
    )
    by_id = {span.span_id: span for span in spans}
    submitted = by_id[_span_id(rows["LoanApplicationSubmitted"])]
    decided_by = by_id[_span_id(rows["LoanApplicationDecided"])]
    assert (submitted.service, submitted.name) == ("command-api", "POST /applications")
    assert submitted.kind == "SERVER"
    assert decided_by.service == "decision-worker"
    assert decided_by.name.startswith("process ")


def _assert_database_calls_are_traced(
    spans: list[CollectedSpan], everything: list[CollectedSpan], trace_id: str
) -> None:
    # The query API's SQLAlchemy (over psycopg) calls are children of the request's span
    # (the command API's grouped statement is in one request's trace: see the test)...
    assert any(
        s.service == "query-api" and s.kind == "CLIENT" and s.attributes.get("db.system")
        for s in spans
    )
    # ...and the loops' psycopg calls children of their batch span, linked to the trace.
    assert _batches_without_database_spans(everything, trace_id) == []


#: The loops that use the database, each in a batch span of its own.
DATABASE_LOOPS = ("decision-worker", "query-projector", "outbox-relay")


def _batches_without_database_spans(everything: list[CollectedSpan], trace_id: str) -> list[str]:
    """The loops with no batch span linked to ``trace_id`` that has a database span."""
    ids = {span.span_id for span in everything if span.trace_id == trace_id}
    parents_of_calls = {span.parent_id for span in everything if span.kind == "CLIENT"}
    missing = []
    for service in DATABASE_LOOPS:
        if not any(
            span.service == service
            and span.name.endswith(" batch")
            and span.span_id in parents_of_calls
            and any(link_trace == trace_id and link in ids for link_trace, link in span.links)
            for span in everything
        ):
            missing.append(service)
    return missing


def _assert_log_lines_lead_to_the_trace(
    pipeline: Pipeline, application_id: str, trace_id: str
) -> None:
    [accepted] = [
        line
        for line in _log_lines(pipeline, "command-api")
        if line.get("event") == "application.accepted"
        and line.get("application_id") == application_id
    ]
    assert accepted["trace_id"] == trace_id
    decided_lines = [
        line
        for line in _log_lines(pipeline, "decision-worker")
        if line.get("event") == "application.decided"
        and line.get("application_id") == application_id
    ]
    assert decided_lines
    assert {line["trace_id"] for line in decided_lines} == {trace_id}
