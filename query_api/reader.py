"""Reading one application's status from the projection (``application_status``)."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from query_api.models import ApplicationStatusResponse
from runtime.breaker import DatabaseBreaker
from runtime.deadline import Budget, bounded_connection
from runtime.errors import NotFound
from runtime.rate_limit import RateLimiter
from schema.tables import application_status

_STATUS_COLUMNS = (
    application_status.c.application_id,
    application_status.c.status,
    application_status.c.cibil_score,
    application_status.c.submitted_at,
    application_status.c.decided_at,
)


class StatusReader:
    """Reads one application's status from the projection, within the request's deadline.

    Behind the circuit breaker; raises :class:`~runtime.errors.DependencyUnavailable` when
    the database does not answer within ``deadline_s`` (or the breaker is open), and
    :class:`~runtime.errors.NotFound` for an unknown id.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        breaker: DatabaseBreaker,
        limiter: RateLimiter,
        deadline_s: float,
    ) -> None:
        self._engine = engine
        self._breaker = breaker
        self._limiter = limiter
        self._deadline_s = deadline_s

    async def __call__(
        self, application_id: UUID, client_id: str
    ) -> tuple[ApplicationStatusResponse, dict[str, str]]:
        """The status of ``application_id`` if ``client_id`` submitted it; RateLimit headers.

        Another client's application is not found, exactly like an unknown id: the
        answer must not tell a caller that an id exists. Raises
        :class:`~runtime.errors.TooManyRequests` past the client's rate. The rate and
        the read are one request to the circuit breaker.
        """
        query = select(*_STATUS_COLUMNS).where(
            application_status.c.application_id == application_id,
            application_status.c.client_id == client_id,
        )
        budget = Budget(self._deadline_s)  # one deadline for the whole request
        async with self._breaker.guard():
            rate = await self._limiter.take(client_id, budget.left())
            async with bounded_connection(self._engine, budget.left()) as conn:
                row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"No application {application_id}.")
        return ApplicationStatusResponse.model_validate(row._mapping), rate
