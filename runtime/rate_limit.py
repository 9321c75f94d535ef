"""Fair use: a token bucket per client, kept in PostgreSQL so that it holds across processes.

Every API process and instance takes from the same bucket, because the bucket is a row
(``client_rate_limits``, created by the migrations) and taking a token is one atomic
statement: refill by the time elapsed (``PREQUAL_RATE_LIMIT_PER_S``), cap at
``PREQUAL_RATE_LIMIT_BURST``, take one if at least one is there. PostgreSQL rather than
a library's shared store: it is already the one server every API instance shares, so a
limit needs no Redis to deploy, secure and watch; the row lock serialises one client's
requests for microseconds, and a client is a channel application, not an end user.

Past the limit the answer is 429 problem+json with ``Retry-After`` and the IETF httpapi
draft's ``RateLimit-Policy`` and ``RateLimit`` headers, which every answer under the
limit carries as well.
"""

from __future__ import annotations

import math

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.deadline import bounded_connection
from runtime.errors import TooManyRequests

_TAKE = text("""
    INSERT INTO client_rate_limits AS b (client_id, tokens, refilled_at)
    VALUES (:client, CAST(:burst AS float8) - 1, clock_timestamp())
    ON CONFLICT (client_id) DO UPDATE
       SET tokens = LEAST(CAST(:burst AS float8), b.tokens
                 + EXTRACT(EPOCH FROM clock_timestamp() - b.refilled_at)::float8 * :rate) - 1,
           refilled_at = clock_timestamp()
     WHERE LEAST(CAST(:burst AS float8), b.tokens
                 + EXTRACT(EPOCH FROM clock_timestamp() - b.refilled_at)::float8 * :rate) >= 1
    RETURNING tokens
    """)
_AVAILABLE = text("""
    SELECT LEAST(CAST(:burst AS float8), tokens
                 + EXTRACT(EPOCH FROM clock_timestamp() - refilled_at)::float8 * :rate)
      FROM client_rate_limits WHERE client_id = :client
    """)
_POLICY = "default"


class RateLimiter:
    """Takes one token from a client's bucket per request; see the module docstring.

    Callers take the token inside their circuit breaker's guard, together with the
    request's own database work: one request is one success or one failure to it.
    """

    def __init__(self, engine: AsyncEngine, deadline_s: float, per_s: float, burst: int) -> None:
        self._engine = engine
        self._deadline_s = deadline_s
        self._per_s = per_s
        self._burst = burst
        window = math.ceil(burst / per_s)
        self._policy = f'"{_POLICY}";q={burst};w={window}'

    async def take(self, client_id: str, within_s: float | None = None) -> dict[str, str]:
        """Take a token for ``client_id``; the ``RateLimit`` headers for the answer.

        Raises :class:`~runtime.errors.TooManyRequests` (429) when the bucket is empty and
        :class:`~runtime.errors.DependencyUnavailable` when the database does not answer
        within ``within_s`` (what is left of the request's deadline; default the whole).
        """
        params = {"client": client_id, "burst": self._burst, "rate": self._per_s}
        seconds = self._deadline_s if within_s is None else within_s
        async with bounded_connection(self._engine, seconds) as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            left = (await autocommit.execute(_TAKE, params)).scalar_one_or_none()
            if left is None:
                available = (await autocommit.execute(_AVAILABLE, params)).scalar_one()
        if left is not None:
            until_full = math.ceil((self._burst - left) / self._per_s)
            return {
                "RateLimit-Policy": self._policy,
                "RateLimit": f'"{_POLICY}";r={math.floor(left)};t={until_full}',
            }
        retry_after = max(1, math.ceil((1 - available) / self._per_s))
        raise TooManyRequests(
            retry_after,
            {"RateLimit-Policy": self._policy, "RateLimit": f'"{_POLICY}";r=0;t={retry_after}'},
        )
