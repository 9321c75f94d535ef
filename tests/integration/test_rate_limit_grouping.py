"""One client's concurrent takes share a statement and get what they would have one by one."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.db import create_engine
from runtime.errors import DependencyUnavailable, TooManyRequests
from runtime.rate_limit import RateLimiter
from runtime.settings import Settings
from runtime.tracing import configure_tracing, flush_tracing, shutdown_tracing, tracer
from tests.support.db import table_locked


@pytest.fixture
def client_id() -> str:
    """A client of the test's own: buckets outlive a test (the table is not emptied)."""
    return f"channel-{uuid.uuid4().hex[:8]}"


def _statements(engine: AsyncEngine, on_send: asyncio.Event | None = None) -> list[str]:
    """Every statement the engine sends to the rate-limit table, as it is sent.

    ``on_send`` is set at each (the listener runs on the event loop's thread).
    """
    sent: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(*args: object) -> None:
        statement = str(args[2])
        if "client_rate_limits" in statement:
            sent.append(statement)
            if on_send is not None:
                on_send.set()

    return sent


async def _takes(
    limiter: RateLimiter, client_id: str, count: int
) -> list[dict[str, str] | BaseException]:
    return await asyncio.gather(
        *(limiter.take(client_id) for _ in range(count)), return_exceptions=True
    )


async def test_concurrent_takes_of_one_client_share_one_statement_and_get_tokens_in_order(
    engine: AsyncEngine, client_id: str
) -> None:
    limiter = RateLimiter(engine, deadline_s=2.0, per_s=0.001, burst=3)
    sent = _statements(engine)

    answers = await _takes(limiter, client_id, 5)

    granted = [a for a in answers if isinstance(a, dict)]
    refused = [a for a in answers if isinstance(a, TooManyRequests)]
    # All five are waiting before the first statement starts: they share it.
    assert len(sent) == 1
    assert [a["RateLimit"].split(";")[1] for a in granted] == ["r=2", "r=1", "r=0"]
    assert len(refused) == 2
    assert all(int(e.headers["Retry-After"]) >= 1 for e in refused)


async def test_a_lone_take_on_a_new_client_creates_its_bucket_full_and_takes_one(
    engine: AsyncEngine, db: psycopg.Connection, client_id: str
) -> None:
    limiter = RateLimiter(engine, deadline_s=2.0, per_s=1.0, burst=10)

    headers = await limiter.take(client_id)

    assert headers["RateLimit"].startswith('"default";r=9;')
    row = db.execute("SELECT tokens FROM client_rate_limits WHERE client_id = %s", [client_id])
    assert row.fetchone() == (pytest.approx(9.0, abs=0.01),)


async def test_a_bucket_refills_by_the_time_elapsed(engine: AsyncEngine, client_id: str) -> None:
    limiter = RateLimiter(engine, deadline_s=2.0, per_s=20.0, burst=1)
    await limiter.take(client_id)
    with pytest.raises(TooManyRequests):
        await limiter.take(client_id)

    await asyncio.sleep(0.1)  # two tokens' worth at 20/s, capped at the burst of one

    assert (await limiter.take(client_id))["RateLimit"].startswith('"default";r=0;')


async def test_takes_waiting_on_a_database_that_does_not_answer_fail_by_their_deadline(
    engine: AsyncEngine, settings: Settings, client_id: str
) -> None:
    limiter = RateLimiter(engine, deadline_s=0.5, per_s=1.0, burst=10)

    with table_locked(settings, "client_rate_limits"):
        answers = await asyncio.gather(
            *(limiter.take(client_id, within_s=0.3) for _ in range(3)), return_exceptions=True
        )

    assert all(isinstance(a, DependencyUnavailable) for a in answers)
    # Healed, the same limiter serves again: nothing of the failed takes is stuck.
    assert (await limiter.take(client_id))["RateLimit"].startswith('"default";r=')


async def test_takes_arriving_while_a_statement_runs_share_the_next_one(
    engine: AsyncEngine, settings: Settings, client_id: str
) -> None:
    limiter = RateLimiter(engine, deadline_s=5.0, per_s=1.0, burst=10)
    first_sent = asyncio.Event()
    sent = _statements(engine, first_sent)

    with table_locked(settings, "client_rate_limits"):
        first = asyncio.ensure_future(limiter.take(client_id))
        await first_sent.wait()  # the first statement is on its way, and waits for the lock
        behind = [asyncio.ensure_future(limiter.take(client_id)) for _ in range(3)]
        await asyncio.sleep(0.2)
    answers = [await first, *[await each for each in behind]]

    assert len(sent) == 2
    assert [a["RateLimit"].split(";")[1] for a in answers] == ["r=9", "r=8", "r=7", "r=6"]


async def test_a_take_cancelled_while_waiting_takes_no_token_and_holds_no_place(
    engine: AsyncEngine, client_id: str
) -> None:
    limiter = RateLimiter(engine, deadline_s=2.0, per_s=0.001, burst=2)
    cancelled = asyncio.ensure_future(limiter.take(client_id))
    served = asyncio.ensure_future(limiter.take(client_id))
    await asyncio.sleep(0)  # both are waiting; the statement has not started
    cancelled.cancel()

    assert (await served)["RateLimit"].split(";")[1] == "r=1"
    assert (await limiter.take(client_id))["RateLimit"].split(";")[1] == "r=0"


async def test_a_request_that_gave_up_while_its_group_waited_for_a_connection_takes_nothing(
    settings: Settings, client_id: str
) -> None:
    engine = create_engine(settings.model_copy(update={"pg_pool_size": 1}), "tests")
    limiter = RateLimiter(engine, deadline_s=3.0, per_s=0.001, burst=2)
    try:
        async with engine.connect():  # the pool's only connection, held
            impatient = asyncio.ensure_future(limiter.take(client_id, within_s=0.2))
            patient = asyncio.ensure_future(limiter.take(client_id, within_s=3.0))
            with pytest.raises(DependencyUnavailable):
                await impatient
        # The impatient request's token was not taken: the patient one gets the first
        # of two, and one is still there for the next request.
        assert (await patient)["RateLimit"].split(";")[1] == "r=1"
        assert (await limiter.take(client_id))["RateLimit"].split(";")[1] == "r=0"
    finally:
        await engine.dispose()


async def test_a_statement_on_a_connection_the_server_closed_is_tried_again_on_a_fresh_one(
    settings: Settings, db: psycopg.Connection, client_id: str
) -> None:
    engine = create_engine(settings.model_copy(update={"pg_pool_size": 1}), "tests")
    limiter = RateLimiter(engine, deadline_s=2.0, per_s=1.0, burst=10)
    try:
        await limiter.take(client_id)  # the pool now holds one idle connection
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'tests' AND datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )

        answers = await _takes(limiter, client_id, 3)

        assert [a["RateLimit"].split(";")[1] for a in answers if isinstance(a, dict)] == [
            "r=8",
            "r=7",
            "r=6",
        ]
    finally:
        await engine.dispose()


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, from an environment without OTEL_*; off at teardown."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    exporter = InMemorySpanExporter()
    assert configure_tracing("tests", exporters=[exporter])
    yield exporter
    shutdown_tracing()


@pytest.fixture
async def traced_engine(
    settings: Settings, spans: InMemorySpanExporter
) -> AsyncIterator[AsyncEngine]:
    """An engine made after tracing is on: psycopg instruments connections made from then."""
    engine = create_engine(settings, "tests")
    yield engine
    await engine.dispose()


async def test_a_shared_statement_is_traced_and_linked_both_ways_to_the_requests_it_served(
    traced_engine: AsyncEngine, spans: InMemorySpanExporter, client_id: str
) -> None:
    limiter = RateLimiter(traced_engine, deadline_s=2.0, per_s=1.0, burst=10)

    async def request(number: int) -> dict[str, str]:
        with tracer().start_as_current_span(f"request {number}", kind=SpanKind.SERVER):
            return await limiter.take(client_id)

    await asyncio.gather(*(request(n) for n in range(3)))
    flush_tracing()

    finished = spans.get_finished_spans()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    (take,) = by_name["rate-limit take"]
    waits = by_name["rate-limit wait"]
    requests = {s.context.span_id: s for s in finished if s.name.startswith("request ")}
    # The statement is a trace of its own, serving all three, with its database span.
    assert take.parent is None
    assert take.attributes is not None
    assert take.attributes["prequal.rate_limit.requests"] == 3
    assert {link.context.span_id for link in take.links} == {w.context.span_id for w in waits}
    database = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert [s.parent.span_id for s in database if s.parent] == [take.context.span_id]
    # Each request's wait is in the request's own trace, linked back to the statement.
    assert len(waits) == 3
    for wait in waits:
        assert wait.parent is not None
        assert wait.parent.span_id in requests
        assert [link.context.span_id for link in wait.links] == [take.context.span_id]


async def test_a_request_whose_token_never_came_ends_its_wait_span_with_an_error(
    traced_engine: AsyncEngine, spans: InMemorySpanExporter, settings: Settings, client_id: str
) -> None:
    limiter = RateLimiter(traced_engine, deadline_s=0.5, per_s=1.0, burst=10)
    with table_locked(settings, "client_rate_limits"), pytest.raises(DependencyUnavailable):
        await limiter.take(client_id, within_s=0.3)
    flush_tracing()

    waits = [s for s in spans.get_finished_spans() if s.name == "rate-limit wait"]
    assert [s.status.status_code for s in waits] == [StatusCode.ERROR]
