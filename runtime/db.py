"""Database engines and the translation of driver failures into our own errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from runtime.errors import DependencyUnavailable
from runtime.logging import get_logger
from runtime.settings import Settings

RV = TypeVar("RV")
_log = get_logger(__name__)


def tcp_options(settings: Settings) -> dict[str, Any]:
    """The libpq options that let the kernel notice a silent network in seconds.

    Without them a connection whose peer vanished (a blackholed path, a failed-over
    host) waits for the kernel's defaults: two hours before the first keepalive probe,
    about 15 minutes of retransmissions for unacknowledged data. Keepalives probe an
    idle connection; ``tcp_user_timeout`` bounds how long sent data may go unacknowledged.
    Neither notices a frozen server process (its kernel still acknowledges), which is
    what :mod:`runtime.deadline` is for.
    """
    return {
        "keepalives": 1,
        "keepalives_idle": settings.pg_keepalives_idle_s,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": settings.pg_tcp_user_timeout_ms,
    }


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
        # A driver error's message must never carry the applicant's data into a log.
        hide_parameters=True,
        connect_args={
            "connect_timeout": settings.pg_connect_timeout_s,
            "application_name": application_name,
            "options": f"-c statement_timeout={settings.pg_statement_timeout_ms}",
            **tcp_options(settings),
        },
    )


class DeadlinePassed(psycopg.OperationalError):
    """A database call outlived its client-side deadline; the connection was closed.

    A subclass of psycopg's ``OperationalError`` on purpose: every loop already treats
    that as "the database is not answering" (abandon the connection, back off, retry).
    """


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection on which every call ends by ``deadline_s``, answered or not.

    psycopg runs every exchange with the server (a statement, a commit, a rollback)
    through :meth:`wait`; this one gives each exchange a deadline. Past it the connection
    is closed at once (:class:`DeadlinePassed`): nothing waits for a server that stopped
    answering, which no server-side timeout can end. Callers that pass their own timeout
    (``notifies(timeout=…)``) keep it.
    """

    deadline_s: float = 5.0

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        """Run ``gen`` on the connection; raise :class:`DeadlinePassed` past the deadline."""
        if timeout is not None:
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, self.deadline_s)
        except psycopg.errors._WaitTimeout as error:
            # Mid-exchange: the protocol state is unknown, so the connection cannot be
            # reused. finish() closes the socket without waiting for the server.
            self.pgconn.finish()
            _log.warning("database.deadline_passed", deadline_s=self.deadline_s)
            raise DeadlinePassed(
                f"no answer from the database within {self.deadline_s:g} s"
            ) from error


def connect(
    settings: Settings,
    application_name: str,
    autocommit: bool = False,
    deadline_s: float | None = None,
) -> BoundedConnection:
    """A plain connection for the loops (relay, workers), every call bounded.

    Connecting is bounded by ``PREQUAL_PG_CONNECT_TIMEOUT_S``; each later call by
    ``deadline_s`` (default ``PREQUAL_LOOP_DB_DEADLINE_S``), see :class:`BoundedConnection`.
    Raises ``psycopg.OperationalError`` when the database cannot be reached.
    """
    conn = BoundedConnection.connect(
        settings.psycopg_conninfo,
        autocommit=autocommit,
        connect_timeout=settings.pg_connect_timeout_s,
        application_name=application_name,
        options=f"-c statement_timeout={settings.pg_statement_timeout_ms}",
        **tcp_options(settings),
    )
    conn.deadline_s = settings.loop_db_deadline_s if deadline_s is None else deadline_s
    return conn


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
