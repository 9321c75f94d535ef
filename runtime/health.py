"""Dependency checks behind every ``GET /health``."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.db import database_errors
from runtime.errors import DependencyUnavailable


async def check_database(engine: AsyncEngine, timeout_s: float) -> None:
    """Raise :class:`DependencyUnavailable` unless the database answers within the timeout."""
    try:
        async with database_errors(), asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except TimeoutError as error:
        raise DependencyUnavailable("database") from error
