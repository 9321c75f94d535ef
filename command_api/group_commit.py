"""Group commit: concurrent submits share one statement, and so one commit.

Each accepted application is three rows (application, projection, outbox event) written
by one statement. Under load, many such statements are waiting for a connection at the
same moment; this writer puts the applications that arrived while the previous
statements were running into one multi-row statement instead. A statement is atomic, so
every application is still stored whole or not at all, and its 202 is sent only after
the commit that contains it. At a low rate nothing waits: a lone request is written at
once, as before. What it saves is per-statement work — a round trip, a parse, a plan, a
WAL flush, and the driver's and pool's overhead — which is what limited the command API
(docs/benchmarks.md).

If a group's statement is refused for its data (a constraint, a value), its applications
are written again one by one, so one application's failure is its own request's error and
nobody else's. If the database itself fails, every request of the group gets that error at
once (a 503), as it would have alone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from prometheus_client import Histogram
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.logging import get_logger

GROUP_SIZE = Histogram(
    "prequal_command_group_commit_size",
    "Applications written by one statement (one commit) of the command API.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)

_Waiting = tuple[Mapping[str, Any], "asyncio.Future[None]"]
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_log = get_logger(__name__)


def numbered_rows(row: str, count: int) -> str:
    """``count`` copies of a ``VALUES`` row template, the i-th one's parameters suffixed ``_i``."""
    return ", ".join(_PLACEHOLDER.sub(rf"%(\1_{i})s", row) for i in range(count))


def numbered_parameters(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The parameters of :func:`numbered_rows`: the i-th row's names suffixed ``_i``."""
    return {f"{name}_{i}": value for i, row in enumerate(rows) for name, value in row.items()}


class GroupCommit:
    """Writes what concurrent requests submit, grouped into as few statements as possible.

    ``statement(n)`` is the SQL that stores ``n`` applications given
    :func:`numbered_parameters`; it is cached per ``n``. At most ``max_in_flight``
    statements run at once (each on its own connection); whatever arrives meanwhile waits
    for the next one, up to ``max_rows`` applications per statement.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        statement: Callable[[int], str],
        max_rows: int = 64,
        max_in_flight: int = 2,
    ) -> None:
        self._engine = engine
        self._statement = lru_cache(maxsize=max_rows)(statement)
        self._max_rows = max_rows
        self._max_in_flight = max_in_flight
        # Made on first use: a semaphore belongs to one event loop.
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[_Waiting] = []
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, row: Mapping[str, Any]) -> None:
        """Return once ``row``'s application is committed; raise the database's error if not."""
        loop = asyncio.get_running_loop()
        if self._slots is None or loop is not self._loop:
            # An app served again on another loop (tests) gets a semaphore of its own.
            self._loop, self._slots = loop, asyncio.Semaphore(self._max_in_flight)
        slots = self._slots
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append((row, future))
        if not self._flushing:
            self._flushing = True
            self._keep(loop.create_task(self._flush(slots)))
        await future

    def _keep(self, task: asyncio.Task[None]) -> None:
        # The event loop holds tasks weakly; a dropped one could vanish mid-write.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, slots: asyncio.Semaphore) -> None:
        try:
            while self._waiting:
                await slots.acquire()
                group = self._waiting[: self._max_rows]
                del self._waiting[: self._max_rows]
                self._keep(asyncio.get_running_loop().create_task(self._write(group, slots)))
        finally:
            self._flushing = False

    async def _write(self, group: list[_Waiting], slots: asyncio.Semaphore) -> None:
        try:
            try:
                await self._execute([row for row, _ in group])
            except Exception as error:  # handed to the requests that wait for it
                if len(group) == 1 or not isinstance(error, IntegrityError | DataError):
                    # The database itself failed (down, restarting, pool exhausted): every
                    # request gets the error now, rather than one retry each after the other.
                    for _, future in group:
                        _settle(future, error)
                    return
                _log.warning("command.group_commit_failed", size=len(group), error=str(error))
                for row, future in group:
                    try:
                        await self._execute([row])
                    except Exception as alone:  # as above, for one request
                        _settle(future, alone)
                    else:
                        _settle(future, None)
                return
            for _, future in group:
                _settle(future, None)
        finally:
            slots.release()

    async def _execute(self, rows: list[Mapping[str, Any]]) -> None:
        async with self._engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql(self._statement(len(rows)), numbered_parameters(rows))
        GROUP_SIZE.observe(len(rows))


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the request was cancelled (its client went away)
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
