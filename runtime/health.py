"""Dependency checks behind every ``GET /health``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.db import connect, database_errors
from runtime.errors import DependencyUnavailable
from runtime.settings import Settings


async def check_database(engine: AsyncEngine, timeout_s: float) -> None:
    """Raise :class:`DependencyUnavailable` unless the database answers within the timeout."""
    try:
        async with database_errors(), asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except TimeoutError as error:
        raise DependencyUnavailable("database") from error


def database_check(settings: Settings) -> Callable[[], None]:
    """A check that opens a connection and runs ``SELECT 1`` (for the loop processes)."""

    def check() -> None:
        with connect(settings, "health-check", autocommit=True) as conn:
            conn.execute("SELECT 1")

    return check
