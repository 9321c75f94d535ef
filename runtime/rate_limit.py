"""Fair use: a token bucket per client, kept in PostgreSQL so that it holds across processes.

Every API process and instance takes from the same bucket, because the bucket is a row
(``client_rate_limits``, created by the migrations) and taking tokens is one atomic
statement: refill by the time elapsed (``PREQUAL_RATE_LIMIT_PER_S``), cap at
``PREQUAL_RATE_LIMIT_BURST``, take as many as are asked for and there. PostgreSQL rather
than a library's shared store: it is already the one server every API instance shares,
so a limit needs no Redis to deploy, secure and watch; the row lock serialises one
client's takes for microseconds, and a client is a channel application, not an end user.

One statement per request was 15 % of the command API's CPU at 300 POST/s
(docs/benchmarks.md, "Where each process's CPU goes"). So a process takes one client's
tokens one statement at a time: the requests of that client that arrive while its
statement runs share the next one, which takes a token for each of them in one go and
hands them out in arrival order. That is what the same requests one after the other
would have got; at a low rate a lone request still makes its own statement at once.

Traces: each request's wait is a ``rate-limit wait`` span of its own trace, and each
statement a ``rate-limit take`` span, the root of a trace of its own (it serves several
requests), with the database span as its child. The two are linked both ways: the
statement to every sampled request it served (up to the SDK's link limit,
``OTEL_SPAN_LINK_COUNT_LIMIT``, 128 by default), each request to the statement that
answered it; the statement is sampled when any of its requests is
(:func:`runtime.tracing.sampler_from_environment`).

Past the limit the answer is 429 problem+json with ``Retry-After`` and the IETF httpapi
draft's ``RateLimit-Policy`` and ``RateLimit`` headers, which every answer under the
limit carries as well.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.deadline import bounded_connection
from runtime.errors import DependencyUnavailable, TooManyRequests
from runtime.tracing import tracer

# Takes min(:n, whole tokens available) from an existing bucket; for a new client it
# creates the bucket full and takes from it. Both return (granted, tokens left). Two
# processes creating the same bucket at once: the loser's insert returns nothing, and it
# asks again, then finding the row.
_TAKE = text("""
    WITH bucket AS (
        SELECT client_id, clock_timestamp() AS now,
               LEAST(CAST(:burst AS float8), tokens
                     + EXTRACT(EPOCH FROM clock_timestamp() - refilled_at)::float8 * :rate)
                 AS available
          FROM client_rate_limits WHERE client_id = :client
           FOR UPDATE
    ), taken AS (
        UPDATE client_rate_limits AS b
           SET tokens = bucket.available - LEAST(:n, GREATEST(0, floor(bucket.available))),
               refilled_at = bucket.now
          FROM bucket
         WHERE b.client_id = bucket.client_id
        RETURNING CAST(LEAST(:n, GREATEST(0, floor(bucket.available))) AS int) AS granted,
                  b.tokens AS remaining
    ), created AS (
        INSERT INTO client_rate_limits (client_id, tokens, refilled_at)
        SELECT :client, CAST(:burst AS float8) - LEAST(:n, :burst), clock_timestamp()
         WHERE NOT EXISTS (SELECT FROM bucket)
        ON CONFLICT (client_id) DO NOTHING
        RETURNING CAST(LEAST(:n, :burst) AS int) AS granted, tokens AS remaining
    )
    SELECT granted, remaining FROM taken UNION ALL SELECT granted, remaining FROM created
    """)
_POLICY = "default"


@dataclass(frozen=True, slots=True)
class Grant:
    """One statement's answer: ``granted`` whole tokens taken, ``left`` in the bucket after."""

    granted: int
    left: float


@dataclass(eq=False, slots=True)
class _Waiter:
    """One request waiting for its token: its answer, and when its deadline passes (loop time).

    ``span``: its ``rate-limit wait`` span, when traced; ``statement``: the span of the
    statement that answered it, set before the answer.
    """

    future: asyncio.Future[dict[str, str]]
    expires: float
    span: SpanContext | None = None
    statement: SpanContext | None = None


class RateLimiter:
    """Takes one token from a client's bucket per request; see the module docstring.

    ``deadline_s`` bounds each statement (seconds); ``per_s`` tokens refill a second, up to
    ``burst``. Callers take the token inside their circuit breaker's guard, together with
    the request's own database work: one request is one success or one failure to it.
    """

    def __init__(self, engine: AsyncEngine, deadline_s: float, per_s: float, burst: int) -> None:
        self._engine = engine
        self._deadline_s = deadline_s
        self._per_s = per_s
        self._burst = burst
        window = math.ceil(burst / per_s)
        self._policy = f'"{_POLICY}";q={burst};w={window}'
        # Per client: the requests waiting for its next statement, in arrival order, and
        # the task that runs its statements while any wait. Both belong to one event loop.
        self._waiting: dict[str, list[_Waiter]] = {}
        self._takers: dict[str, asyncio.Task[None]] = {}

    async def take(self, client_id: str, within_s: float | None = None) -> dict[str, str]:
        """Take a token for ``client_id``; the ``RateLimit`` headers for the answer.

        Raises :class:`~runtime.errors.TooManyRequests` (429) when the bucket is empty and
        :class:`~runtime.errors.DependencyUnavailable` when the database does not answer
        within ``within_s`` (what is left of the request's deadline; default the whole).
        """
        loop = asyncio.get_running_loop()
        seconds = self._deadline_s if within_s is None else within_s
        # A 429 is the client's doing, not a failure of this span: only a missed deadline is.
        with tracer().start_as_current_span(
            "rate-limit wait",
            kind=SpanKind.INTERNAL,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            waiter = _Waiter(loop.create_future(), loop.time() + seconds, _valid(span))
            self._waiting.setdefault(client_id, []).append(waiter)
            taker = self._takers.get(client_id)
            if taker is None or taker.done() or taker.get_loop() is not loop:
                # A context of its own: the statements serve many requests, so they must
                # not be logged or traced as the one request that happened to start the run.
                self._takers[client_id] = loop.create_task(
                    self._take_for(client_id), context=contextvars.Context()
                )
            try:
                async with asyncio.timeout_at(waiter.expires):
                    return await waiter.future
            except TooManyRequests:
                raise
            except TimeoutError as error:
                span.set_status(Status(StatusCode.ERROR, "deadline passed"))
                raise DependencyUnavailable("database") from error
            except Exception as error:  # the statement failed: the request answers 503
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise
            finally:
                if waiter.statement is not None:
                    span.add_link(waiter.statement)
                # Timed out or cancelled while still waiting: it gives up its place, and no
                # token is taken for it (the statement counts only requests still waiting).
                waiting = self._waiting.get(client_id, [])
                if waiter in waiting:
                    waiting.remove(waiter)

    async def _take_for(self, client_id: str) -> None:
        """Run ``client_id``'s statements until no request of it waits."""
        try:
            while group := self._waiting.pop(client_id, []):
                try:
                    answered = await self._grant(client_id, group)
                except Exception as error:  # each request still waiting gets it
                    for waiter in group:
                        if not waiter.future.done():
                            waiter.future.set_exception(error)
                    continue
                if answered is None:  # every request of the group gave up first
                    continue
                grant, served = answered
                for position, waiter in enumerate(served):
                    if not waiter.future.done():  # one that gave up since: its token is spent
                        self._answer(waiter.future, grant, position)
        finally:
            if self._takers.get(client_id) is asyncio.current_task():
                del self._takers[client_id]

    async def _grant(
        self, client_id: str, group: list[_Waiter]
    ) -> tuple[Grant, list[_Waiter]] | None:
        """Take a token for each request of ``group`` still waiting once a connection is held.

        Returns the grant and those requests, in order, or None if none was left. A
        statement that fails at once (a pooled connection the server has closed) is tried
        once more on a fresh connection while a request still has time, so one stale
        connection does not fail the whole group; a server that does not answer has used
        that time up by then.
        """
        try:
            return await self._statement(client_id, group)
        except DependencyUnavailable:
            return await self._statement(client_id, group)

    async def _statement(
        self, client_id: str, group: list[_Waiter]
    ) -> tuple[Grant, list[_Waiter]] | None:
        loop = asyncio.get_running_loop()
        live = [w for w in group if not w.future.done()]
        if not live:
            return None
        # Nobody waits longer than the longest deadline among those still waiting.
        seconds = min(self._deadline_s, max(w.expires for w in live) - loop.time())
        async with bounded_connection(self._engine, seconds) as conn:
            # Counted with the connection held: who gave up meanwhile takes nothing.
            live = [w for w in group if not w.future.done()]
            if not live:
                return None
            params = {
                "client": client_id,
                "burst": self._burst,
                "rate": self._per_s,
                "n": len(live),
            }
            with tracer().start_as_current_span(
                "rate-limit take",
                kind=SpanKind.INTERNAL,
                links=[Link(w.span) for w in live if w.span is not None],
                attributes={"prequal.rate_limit.requests": len(live)},
            ) as span:
                autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                row = (await autocommit.execute(_TAKE, params)).first()
                if row is None:  # another process created the bucket first: it exists now
                    row = (await autocommit.execute(_TAKE, params)).one()
        statement = _valid(span)
        for waiter in live:
            waiter.statement = statement
        return Grant(int(row.granted), float(row.remaining)), live

    def _answer(self, future: asyncio.Future[dict[str, str]], grant: Grant, position: int) -> None:
        """The headers of the ``position``-th request of a statement, or its 429."""
        if position < grant.granted:
            # What was left just after this request's own token, had each taken alone.
            left = grant.left + (grant.granted - position - 1)
            until_full = math.ceil((self._burst - left) / self._per_s)
            future.set_result(
                {
                    "RateLimit-Policy": self._policy,
                    "RateLimit": f'"{_POLICY}";r={math.floor(left)};t={until_full}',
                }
            )
            return
        retry_after = max(1, math.ceil((1 - grant.left) / self._per_s))
        future.set_exception(
            TooManyRequests(
                retry_after,
                {
                    "RateLimit-Policy": self._policy,
                    "RateLimit": f'"{_POLICY}";r=0;t={retry_after}',
                },
            )
        )


def _valid(span: trace.Span) -> SpanContext | None:
    """``span``'s context if it is exported, else None (tracing off, or not sampled).

    A link is made only to a span that exists in the collector.
    """
    context = span.get_span_context()
    return context if context.is_valid and context.trace_flags.sampled else None
