"""Dependency checks behind every ``GET /health``, each bounded by a client-side deadline."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.db import connect
from runtime.deadline import bounded_connection
from runtime.settings import Settings


async def check_database(engine: AsyncEngine, timeout_s: float) -> None:
    """Raise :class:`~runtime.errors.DependencyUnavailable` unless ``SELECT 1`` answers in time.

    The deadline covers the pool, connecting and the statement (:mod:`runtime.deadline`),
    so a frozen database answers within ``timeout_s``, not after psycopg's cancellation.
    """
    async with bounded_connection(engine, timeout_s) as conn:
        await conn.execute(text("SELECT 1"))


def database_check(settings: Settings) -> Callable[[], None]:
    """A check that opens a connection and runs ``SELECT 1`` (for the loop processes).

    Connecting is bounded by ``PREQUAL_PG_CONNECT_TIMEOUT_S``, the statement by
    ``PREQUAL_HEALTH_DEADLINE_S``; :func:`runtime.observability.run_checks` bounds the
    whole check once more, so /health answers in time even while this one still waits.
    """

    def check() -> None:
        deadline_s = settings.health_deadline_s
        with connect(settings, "health-check", autocommit=True, deadline_s=deadline_s) as conn:
            conn.execute("SELECT 1")

    return check
