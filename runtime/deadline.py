"""Client-side deadlines on PostgreSQL connections: past one, the connection is cut.

Nothing on the server's side can bound a call to a server that has stopped answering:
``statement_timeout`` needs a server that runs, libpq's ``connect_timeout`` covers
connecting only, and TCP keepalives and ``TCP_USER_TIMEOUT`` notice a silent *network*
but not a frozen server *process*, whose kernel still acknowledges every packet. So each
call carries a deadline measured here, and when it passes the connection's socket is
shut down locally (:func:`cut`): the pending read fails at once with the driver's
"server closed the connection" error, SQLAlchemy's pool discards the connection instead
of returning it, and nothing waits for the server.

Why not ``asyncio.timeout`` around a query: psycopg answers a cancelled coroutine by
sending the server a cancel request and then waiting for the server to confirm it, 5 s
each (psycopg 3.3 ``AsyncConnection.wait``). A frozen server confirms nothing, so a
cancelled request took about 10 s, then another rollback on the same connection hung
again. Cutting the socket involves the server in nothing.

This module bounds an API request's database work as a whole
(:func:`bounded_connection`). The loops (relay, workers) bound each call on their plain
connections instead (:class:`runtime.db.BoundedConnection`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runtime.db import database_errors
from runtime.errors import DependencyUnavailable
from runtime.logging import get_logger

_log = get_logger(__name__)


def cut(connection: Any) -> bool:
    """Shut down the socket of a psycopg connection (sync or async) without I/O.

    Returns whether there was an open socket to cut. The file descriptor stays owned by
    the driver, which notices the shutdown on its next read or write and closes it.
    """
    pgconn = getattr(connection, "pgconn", None)
    if pgconn is None or connection.closed:
        return False
    try:
        fileno = pgconn.socket
    except psycopg.OperationalError:  # already closed by the driver
        return False
    # A duplicate descriptor: shutdown() acts on the socket itself, close() on the dup.
    try:
        with socket.socket(fileno=os.dup(fileno)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # not connected any more: nothing left to cut
        return False
    return True


# --------------------------------------------------------------------------- asyncio


class Budget:
    """One request's deadline, shared by every database call the request makes.

    Each call gets what is left (:meth:`left`), so that a request taking a rate-limit token
    and then writing is bounded by one deadline in all, not by one per call.
    """

    def __init__(self, seconds: float) -> None:
        self._expires = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds until the deadline; a small positive floor once it has passed."""
        return max(0.001, self._expires - time.monotonic())


@asynccontextmanager
async def bounded_connection(engine: AsyncEngine, seconds: float) -> AsyncIterator[AsyncConnection]:
    """A pooled connection whose whole use, return to the pool included, ends by ``seconds``.

    Waiting for the pool and connecting are cancelled at the deadline (no query runs yet,
    so cancelling is safe); once a connection is held, the deadline cuts it (:func:`cut`).
    Raises :class:`~runtime.errors.DependencyUnavailable` ("database") when the database
    does not answer in time or cannot be reached; other errors pass through unchanged.
    """
    loop = asyncio.get_running_loop()
    expires = loop.time() + seconds
    conn = engine.connect()
    try:
        async with database_errors(), asyncio.timeout_at(expires):
            await conn.start()
    except TimeoutError as error:
        raise DependencyUnavailable("database") from error
    raw = (await conn.get_raw_connection()).driver_connection
    cut_at_deadline: list[bool] = []
    timer = loop.call_at(expires, _cut_late, raw, cut_at_deadline)
    try:
        async with database_errors():
            try:
                yield conn
            finally:
                if cut_at_deadline:
                    # A cut socket may still hold the last answer, so the call can seem to
                    # have succeeded: never hand this connection back to the pool.
                    await conn.invalidate()
                # Still under the deadline: returning a connection rolls back, and a
                # rollback on a frozen server would hang like any other statement.
                await conn.close()
    finally:
        # No await between close() returning the connection and this: the timer cannot
        # fire on a connection that another request has already taken from the pool.
        timer.cancel()


def _cut_late(raw: Any, cut_at_deadline: list[bool]) -> None:
    cut_at_deadline.append(True)
    if cut(raw):
        _log.warning("database.deadline_passed", where="api")
