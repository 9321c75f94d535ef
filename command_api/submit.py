"""The submit use case: one transaction owns the application, its event and its key.

Either everything is stored (application, outbox event, PENDING projection row,
idempotency key) or nothing is. The transaction is the unit of work: the stores below
execute statements in it and never commit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from command_api.group_commit import GroupCommit, Stage, numbered_rows, outcome_of
from command_api.models import ApplicationRequest
from outbox.append import OUTBOX_COLUMNS, OutboxMessage, append
from runtime.breaker import DatabaseBreaker
from runtime.db import database_errors
from runtime.deadline import bounded_connection
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
from schema.events import (
    ApplicationStatus,
    LoanApplicationSubmittedV1,
    SubmittedEvent,
)
from schema.tables import application_status, applications, idempotency_keys

IDEMPOTENCY_HEADER = "Idempotency-Key"

# Data-modifying CTEs: three inserts, one statement, one commit. The column lists are
# the same as the SQLAlchemy path's (_store and outbox.append); tests compare the rows.
# Each row template is repeated once per application of a group (command_api.group_commit).
_APPLICATION_ROW = """(%(id)s, %(client_id)s, %(pan)s, %(name)s, %(income)s, %(amount)s,
    %(loan_type)s, 'PENDING', %(now)s, %(now)s)"""
_PROJECTION_ROW = "(%(id)s, %(client_id)s, 'PENDING', %(now)s, %(now)s, 1)"
# In OUTBOX_COLUMNS order.
_OUTBOX_ROW = """(%(event_id)s, %(aggregatetype)s, %(id)s::text, %(type)s, %(topic)s,
    %(payload)s::jsonb, %(correlation_id)s, %(causation_id)s, %(traceparent)s, %(now)s)"""


def store_applications_ctes(count: int) -> str:
    """The CTEs storing ``count`` applications and their projection rows (numbered params)."""
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


def submit_statement(count: int) -> str:
    """One statement storing ``count`` applications, their projection rows and events."""
    return store_applications_ctes(count) + f"""
INSERT INTO outbox ({", ".join(OUTBOX_COLUMNS)})
VALUES {numbered_rows(_OUTBOX_ROW, count)}
"""  # noqa: S608 — as above


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
        self._group_commit = GroupCommit(engine, submit_statement, deadline_s=deadline_s)
        self._topic = topic
        self._ttl = idempotency_ttl
        self._breaker = breaker or DatabaseBreaker("command-api", threshold=3, open_s=2.0)
        self._deadline_s = deadline_s
        # None only for the benchmark's baseline (the original design had no limit).
        self._limiter = limiter

    async def __call__(self, request: ApplicationRequest, ctx: SubmitContext) -> Accepted:
        """Run the use case; raise a problem error when the request cannot be accepted.

        Raises :class:`~runtime.errors.WriteFailed` (503) when the database does not
        answer within the deadline or the circuit breaker is open; its outcome says
        whether the application may have been stored.
        """
        try:
            async with self._breaker.guard():
                rate = {} if self._limiter is None else await self._limiter.take(ctx.client_id)
                accepted = replace(await self._transaction(request, ctx), rate_limit=rate)
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

    async def _transaction(self, request: ApplicationRequest, ctx: SubmitContext) -> Accepted:
        if ctx.idempotency_key is None:
            return await self._one_statement(request, ctx)
        stage = Stage.CONNECTING
        try:
            async with bounded_connection(self._engine, self._deadline_s) as conn:
                await conn.begin()
                now = datetime.now(UTC)
                fingerprint = request.fingerprint()
                earlier = await _claim_key(
                    conn, ctx.client_id, ctx.idempotency_key, fingerprint, now
                )
                if earlier is not None:
                    return Accepted(earlier, replayed=True)
                application_id = uuid4()
                await _store(conn, application_id, ctx.client_id, request, now)
                await self._emit(conn, self._message(application_id, request, ctx, now))
                await conn.execute(
                    insert(idempotency_keys).values(
                        client_id=ctx.client_id,
                        key=ctx.idempotency_key,
                        fingerprint=fingerprint,
                        application_id=application_id,
                        created_at=now,
                        expires_at=now + self._ttl,
                    )
                )
                # From here on a lost answer leaves the outcome unknown: the commit may
                # have been applied. The key makes the client's retry safe.
                stage = Stage.SENT
                await conn.commit()
            return Accepted(application_id)
        except DependencyUnavailable as error:
            raise WriteFailed(outcome_of(stage)) from error

    async def _one_statement(self, request: ApplicationRequest, ctx: SubmitContext) -> Accepted:
        """The common case (no Idempotency-Key): all three rows in one SQL statement.

        A single statement is a transaction of its own, so on an autocommit connection
        the application, its projection row and its outbox event commit together in one
        round trip — instead of BEGIN, three INSERTs and COMMIT. Concurrent requests share
        the statement (:mod:`command_api.group_commit`); each application is still whole
        or absent. It is the command API's hot path (see docs/benchmarks.md).
        """
        message, params = self._statement_parameters(request, ctx)
        async with database_errors():
            await self._group_commit.write(params)
        return Accepted(message.envelope.aggregate_id)

    def _statement_parameters(
        self, request: ApplicationRequest, ctx: SubmitContext
    ) -> tuple[OutboxMessage, dict[str, Any]]:
        """A new application's event, and the parameters of the one-statement submit."""
        now = datetime.now(UTC)
        application_id = uuid4()
        message = self._message(application_id, request, ctx, now)
        env = message.envelope
        params = {
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
        }
        return message, params

    async def _emit(self, conn: AsyncConnection, message: OutboxMessage) -> None:
        """Hand the event over: to the outbox, in the same transaction as the application.

        The one seam where the event leaves the use case; the benchmark's baseline
        (``bench.baseline_api``) overrides it to publish after the commit instead.
        """
        await append(conn, message)

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


async def _store(
    conn: AsyncConnection,
    application_id: UUID,
    client_id: str,
    request: ApplicationRequest,
    now: datetime,
) -> None:
    await conn.execute(
        insert(applications).values(
            id=application_id,
            client_id=client_id,
            pan_number=request.pan_number,
            applicant_name=request.applicant_name,
            monthly_income_inr=request.monthly_income_inr,
            loan_amount_inr=request.loan_amount_inr,
            loan_type=request.loan_type.value,
            status=ApplicationStatus.PENDING.value,
            created_at=now,
            updated_at=now,
        )
    )
    # The projection row is written here, not by the projector, so that a GET right
    # after the 202 already answers PENDING (read-your-writes for the applicant).
    await conn.execute(
        insert(application_status).values(
            application_id=application_id,
            client_id=client_id,
            status=ApplicationStatus.PENDING.value,
            submitted_at=now,
            updated_at=now,
            version=1,
        )
    )


def _lock_id(client_id: str, key: str) -> int:
    scoped = f"{client_id}\x1f{key}".encode()
    return int.from_bytes(hashlib.sha256(scoped).digest()[:8], "big", signed=True)


async def _claim_key(
    conn: AsyncConnection, client_id: str, key: str, fingerprint: str, now: datetime
) -> UUID | None:
    """Own ``key`` for this transaction; return the earlier application if it is a retry.

    A transaction-scoped advisory lock marks the key as in flight until this
    transaction ends, so a concurrent request with the same key is told 409 at once
    instead of waiting on (or racing) the first.
    """
    acquired = await conn.scalar(select(func.pg_try_advisory_xact_lock(_lock_id(client_id, key))))
    if not acquired:
        raise Conflict(f"A request with this {IDEMPOTENCY_HEADER} is still being processed.")
    row = (
        await conn.execute(
            select(
                idempotency_keys.c.fingerprint,
                idempotency_keys.c.application_id,
                idempotency_keys.c.expires_at,
            ).where(idempotency_keys.c.client_id == client_id, idempotency_keys.c.key == key)
        )
    ).first()
    if row is None:
        return None
    if row.expires_at <= now:
        await conn.execute(
            delete(idempotency_keys).where(
                idempotency_keys.c.client_id == client_id, idempotency_keys.c.key == key
            )
        )
        return None
    if row.fingerprint != fingerprint:
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
    application_id: UUID = row.application_id
    return application_id
