"""Database engines and the translation of driver failures into our own errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from runtime.errors import DependencyUnavailable
from runtime.settings import Settings


def create_engine(settings: Settings, application_name: str) -> AsyncEngine:
    """The async engine of an API process: a bounded psycopg 3 pool that fails fast.

    A dead database must turn into a quick 503, never a hanging client: connecting,
    waiting for a pooled connection and running one statement are all bounded.
    """
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.pg_pool_size,
        max_overflow=0,
        pool_timeout=settings.pg_pool_timeout_s,
        pool_pre_ping=settings.pg_pool_pre_ping,
        connect_args={
            "connect_timeout": settings.pg_connect_timeout_s,
            "application_name": application_name,
            "options": f"-c statement_timeout={settings.pg_statement_timeout_ms}",
        },
    )


def connect(
    settings: Settings, application_name: str, autocommit: bool = False
) -> psycopg.Connection:
    """A plain psycopg connection for the loops (relay, workers), bounded like the pool."""
    return psycopg.connect(
        settings.psycopg_conninfo,
        autocommit=autocommit,
        connect_timeout=settings.pg_connect_timeout_s,
        application_name=application_name,
        options=f"-c statement_timeout={settings.pg_statement_timeout_ms}",
    )


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be reached right now."""
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(error, sa_exc.DBAPIError):
        return error.connection_invalidated or isinstance(
            error.orig, psycopg.OperationalError | psycopg.InterfaceError
        )
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError | OSError)


@asynccontextmanager
async def database_errors() -> AsyncIterator[None]:
    """Turn "the database is not answering" into :class:`DependencyUnavailable`."""
    try:
        yield
    except (sa_exc.SQLAlchemyError, psycopg.Error, OSError) as error:
        if is_unavailable(error):
            raise DependencyUnavailable("database") from error
        raise
