"""Make the suite's database stop answering on purpose, from the inside."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from runtime.settings import Settings


@contextmanager
def table_locked(settings: Settings, table: str) -> Iterator[None]:
    """Every statement touching ``table`` waits until the block ends.

    The server is up and the connection open: to a client it looks like a server that
    has stopped answering, which only a client-side deadline ends.
    """
    with psycopg.connect(settings.psycopg_conninfo) as holder:
        holder.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
        )
        try:
            yield
        finally:
            holder.rollback()
