"""The submit use case: one statement owns the application, its event and its key.

Either everything is stored (application, outbox event, PENDING projection row,
idempotency key) or nothing is. Every submit, with an Idempotency-Key or without, is one
row of the same SQL statement (:func:`submit_statement`), which concurrent requests
share (:mod:`command_api.group_commit`): a statement is a transaction of its own, so each
application is whole or absent, and a request is answered after the commit that holds it.
One mapping from the request to that row (:meth:`SubmitApplication.row`) feeds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from command_api.group_commit import GroupCommit, numbered_rows
from command_api.models import ApplicationRequest
from outbox.append import OUTBOX_COLUMNS, OutboxMessage
from runtime.breaker import DatabaseBreaker
from runtime.db import database_errors
from runtime.deadline import Budget, bounded_connection
from runtime.errors import (
    Conflict,
    DependencyUnavailable,
    FieldError,
    Outcome,
    ValidationProblem,
    WriteFailed,
)
from runtime.logging import get_logger
from runtime.rate_limit import RateLimiter
from schema.events import LoanApplicationSubmittedV1, SubmittedEvent
from schema.tables import idempotency_keys

IDEMPOTENCY_HEADER = "Idempotency-Key"

# The benchmark's baseline stores applications without an outbox event (bench.baseline_api):
# these templates are its statement, with the same columns as submit_statement's.
_APPLICATION_ROW = """(%(id)s, %(client_id)s, %(pan)s, %(name)s, %(income)s, %(amount)s,
    %(loan_type)s, 'PENDING', %(now)s, %(now)s)"""
_PROJECTION_ROW = "(%(id)s, %(client_id)s, 'PENDING', %(now)s, %(now)s, 1)"


def store_applications_ctes(count: int) -> str:
    """The CTEs storing ``count`` applications and projection rows, without events.

    For the benchmark's baseline only (the original design published after the commit).
    """
    return f"""
WITH application AS (
    INSERT INTO applications (id, client_id, pan_number, applicant_name, monthly_income_inr,
                              loan_amount_inr, loan_type, status, created_at, updated_at)
    VALUES {numbered_rows(_APPLICATION_ROW, count)}
), projection AS (
    INSERT INTO application_status (application_id, client_id, status, submitted_at,
                                    updated_at, version)
    VALUES {numbered_rows(_PROJECTION_ROW, count)}
)
"""  # noqa: S608 — built from the constant row templates; every value is a bound parameter


#: One application of :func:`submit_statement`: every value a bound parameter, typed so
#: that a NULL (no Idempotency-Key) still has its column's type.
_INPUT_ROW = """(%(ord)s::int, %(id)s::uuid, %(client_id)s::text, %(pan)s::text, %(name)s::text,
    %(income)s::numeric, %(amount)s::numeric, %(loan_type)s::text, %(now)s::timestamptz,
    %(event_id)s::uuid, %(aggregatetype)s::text, %(type)s::text, %(topic)s::text,
    %(payload)s::text, %(correlation_id)s::text, %(causation_id)s::text,
    %(traceparent)s::text, %(key)s::text, %(fingerprint)s::text, %(expires_at)s::timestamptz,
    %(lock_id)s::bigint)"""


def submit_statement(count: int) -> str:
    """One statement storing ``count`` applications (:meth:`SubmitApplication.row` each).

    For each application with an Idempotency-Key it first takes the key's advisory lock
    (held to the end of this statement's transaction: a concurrent request with the key
    is told 409) and claims the key (a new key, or one that has expired); only then are
    the application, its projection row and its outbox event inserted. It returns, per
    row, ``(ord, locked, accepted)``: accepted, or not locked (in flight elsewhere), or
    locked but the key already taken (the request is a retry, or reuses the key).
    """
    return f"""
WITH input (ord, id, client_id, pan, name, income, amount, loan_type, now, event_id,
            aggregatetype, type, topic, payload, correlation_id, causation_id, traceparent,
            key, fingerprint, expires_at, lock_id) AS (
    VALUES {numbered_rows(_INPUT_ROW, count)}
), locked AS MATERIALIZED (
    SELECT ord FROM input
     WHERE CASE WHEN key IS NULL THEN true ELSE pg_try_advisory_xact_lock(lock_id) END
), claimed AS (
    INSERT INTO idempotency_keys AS k
           (client_id, key, fingerprint, application_id, created_at, expires_at)
    SELECT client_id, key, fingerprint, id, now, expires_at
      FROM input JOIN locked USING (ord) WHERE key IS NOT NULL
    ON CONFLICT (client_id, key) DO UPDATE
       SET fingerprint = EXCLUDED.fingerprint, application_id = EXCLUDED.application_id,
           created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
     WHERE k.expires_at <= EXCLUDED.created_at
    RETURNING client_id, key
), accepted AS (
    SELECT input.* FROM input JOIN locked USING (ord)
     WHERE input.key IS NULL
        OR (input.client_id, input.key) IN (SELECT client_id, key FROM claimed)
), application AS (
    INSERT INTO applications (id, client_id, pan_number, applicant_name, monthly_income_inr,
                              loan_amount_inr, loan_type, status, created_at, updated_at)
    SELECT id, client_id, pan, name, income, amount, loan_type, 'PENDING', now, now
      FROM accepted
), projection AS (
    -- Written here, not only by the projector: a GET right after the 202 answers PENDING.
    INSERT INTO application_status (application_id, client_id, status, submitted_at,
                                    updated_at, version)
    SELECT id, client_id, 'PENDING', now, now, 1 FROM accepted
), event AS (
    INSERT INTO outbox ({", ".join(OUTBOX_COLUMNS)})
    SELECT event_id, aggregatetype, id::text, type, topic, payload::jsonb, correlation_id,
           causation_id, traceparent, now
      FROM accepted
)
SELECT input.ord, locked.ord IS NOT NULL, accepted.ord IS NOT NULL
  FROM input LEFT JOIN locked USING (ord) LEFT JOIN accepted USING (ord)
"""  # noqa: S608 — built from constant templates; every value is a bound parameter


_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of a submit: the application id, and whether it is a replayed answer."""

    application_id: UUID
    replayed: bool = False
    #: The RateLimit headers of the answer (empty without a limiter).
    rate_limit: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubmitContext:
    """Request metadata the use case needs besides the body."""

    correlation_id: str
    idempotency_key: str | None = None
    traceparent: str | None = None
    #: The OAuth client submitting (its token's azp or sub); it alone may read the result.
    client_id: str = ""


class SubmitApplication:
    """Accept an application: store it, its outbox event and projection row atomically."""

    def __init__(
        self,
        engine: AsyncEngine,
        topic: str,
        idempotency_ttl: timedelta,
        breaker: DatabaseBreaker | None = None,
        deadline_s: float = 2.0,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._engine = engine
        self._group_commit = GroupCommit(
            engine, submit_statement, deadline_s=deadline_s, exclusive=_key_of
        )
        self._topic = topic
        self._ttl = idempotency_ttl
        self._breaker = breaker or DatabaseBreaker("command-api", threshold=3, open_s=2.0)
        self._deadline_s = deadline_s
        # None: no per-client limit (tests of the write path alone).
        self._limiter = limiter

    async def __call__(self, request: ApplicationRequest, ctx: SubmitContext) -> Accepted:
        """Run the use case; raise a problem error when the request cannot be accepted.

        Raises :class:`~runtime.errors.WriteFailed` (503) when the database does not
        answer within the deadline or the circuit breaker is open (its outcome says
        whether the application may have been stored), :class:`~runtime.errors.Conflict`
        (409) while the same Idempotency-Key is in flight, and
        :class:`~runtime.errors.ValidationProblem` (422) for a key reused with another body.
        """
        budget = Budget(self._deadline_s)  # one deadline for the whole request
        try:
            async with self._breaker.guard():
                rate = (
                    {}
                    if self._limiter is None
                    else await self._limiter.take(ctx.client_id, budget.left())
                )
                accepted = replace(await self.store(request, ctx, budget), rate_limit=rate)
        except WriteFailed:
            raise
        except DependencyUnavailable as error:  # the breaker was open: nothing was sent
            retry_after = int(error.headers.get("Retry-After", "1"))
            raise WriteFailed(Outcome.NOT_STORED, retry_after) from error
        # The PAN is masked by the logging pipeline, like every PAN in every log line.
        _log.info(
            "application.accepted",
            application_id=str(accepted.application_id),
            pan_number=request.pan_number,
            loan_type=request.loan_type.value,
            replayed=accepted.replayed,
        )
        return accepted

    async def store(
        self, request: ApplicationRequest, ctx: SubmitContext, budget: Budget
    ) -> Accepted:
        """Store the application as one row of a shared statement (no breaker, no limit).

        The seam the benchmark's baseline replaces (``bench.baseline_api``).
        """
        message, row = self.row(request, ctx)
        async with database_errors():
            outcome = await self._group_commit.write(row, budget.left())
        if outcome is None or outcome.accepted:
            return Accepted(message.envelope.aggregate_id)
        if not outcome.locked:
            raise Conflict(f"A request with this {IDEMPOTENCY_HEADER} is still being processed.")
        return await self._earlier(ctx, row["fingerprint"], budget)

    async def _earlier(self, ctx: SubmitContext, fingerprint: str, budget: Budget) -> Accepted:
        """The first answer to a retry: the application the key already names, if it fits."""
        query = select(idempotency_keys.c.fingerprint, idempotency_keys.c.application_id).where(
            idempotency_keys.c.client_id == ctx.client_id,
            idempotency_keys.c.key == ctx.idempotency_key,
        )
        try:
            async with bounded_connection(self._engine, budget.left()) as conn:
                found = (await conn.execute(query)).first()
        except DependencyUnavailable as error:  # only a lookup failed: nothing was written
            raise WriteFailed(Outcome.NOT_STORED) from error
        if found is None:  # expired and purged in between: let the client try again
            raise Conflict(f"This {IDEMPOTENCY_HEADER} just expired; retry the request.")
        if found.fingerprint != fingerprint:
            raise ValidationProblem(
                f"This {IDEMPOTENCY_HEADER} was already used with a different request body.",
                [
                    FieldError(
                        IDEMPOTENCY_HEADER,
                        "already used with a different request body; use a new key",
                        "header",
                        "idempotency_key_reused",
                    )
                ],
            )
        application_id: UUID = found.application_id
        return Accepted(application_id, replayed=True)

    def row(self, request: ApplicationRequest, ctx: SubmitContext) -> tuple[OutboxMessage, Row]:
        """The one mapping from a request to its stored form: its event and statement row."""
        now = datetime.now(UTC)
        application_id = uuid4()
        message = self._message(application_id, request, ctx, now)
        env = message.envelope
        key = ctx.idempotency_key
        row: Row = {
            "id": application_id,
            "client_id": ctx.client_id,
            "pan": request.pan_number,
            "name": request.applicant_name,
            "income": request.monthly_income_inr,
            "amount": request.loan_amount_inr,
            "loan_type": request.loan_type.value,
            "now": now,
            "event_id": env.event_id,
            "aggregatetype": message.aggregate_type,
            "type": env.event_type.value,
            "topic": message.topic,
            "payload": env.model_dump_json(),
            "correlation_id": env.correlation_id,
            "causation_id": env.causation_id,
            "traceparent": message.traceparent,
            "key": key,
            "fingerprint": request.fingerprint() if key is not None else None,
            "expires_at": now + self._ttl if key is not None else None,
            "lock_id": _lock_id(ctx.client_id, key) if key is not None else None,
        }
        return message, row

    def _message(
        self,
        application_id: UUID,
        request: ApplicationRequest,
        ctx: SubmitContext,
        now: datetime,
    ) -> OutboxMessage:
        event = SubmittedEvent(
            event_id=uuid4(),
            occurred_at=now,
            aggregate_id=application_id,
            correlation_id=ctx.correlation_id,
            causation_id=ctx.correlation_id,
            data=LoanApplicationSubmittedV1(
                application_id=application_id,
                pan_number=request.pan_number,
                applicant_name=request.applicant_name,
                monthly_income_inr=request.monthly_income_inr,
                loan_amount_inr=request.loan_amount_inr,
                loan_type=request.loan_type,
                submitted_at=now,
                client_id=ctx.client_id or None,
            ),
        )
        return OutboxMessage(event, self._topic, traceparent=ctx.traceparent)


#: One application's parameters of :func:`submit_statement`.
Row = dict[str, Any]


def _key_of(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (client, Idempotency-Key) two rows of one statement must not share."""
    key = row.get("key")
    return None if key is None else (row["client_id"], key)


def _lock_id(client_id: str, key: str) -> int:
    scoped = f"{client_id}\x1f{key}".encode()
    return int.from_bytes(hashlib.sha256(scoped).digest()[:8], "big", signed=True)
