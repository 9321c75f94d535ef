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
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from functools import lru_cache
from typing import Any

from prometheus_client import Histogram
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.deadline import bounded_connection
from runtime.errors import DependencyUnavailable, Outcome, WriteFailed
from runtime.logging import get_logger

GROUP_SIZE = Histogram(
    "prequal_command_group_commit_size",
    "Applications written by one statement (one commit) of the command API.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_log = get_logger(__name__)


def numbered_rows(row: str, count: int) -> str:
    """``count`` copies of a ``VALUES`` row template, the i-th one's parameters suffixed ``_i``."""
    return ", ".join(_PLACEHOLDER.sub(rf"%(\1_{i})s", row) for i in range(count))


def numbered_parameters(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The parameters of :func:`numbered_rows`: the i-th row's names suffixed ``_i``."""
    return {f"{name}_{i}": value for i, row in enumerate(rows) for name, value in row.items()}


class Stage(Enum):
    """How far one application has gone towards the database; decides a 503's outcome."""

    #: Queued behind running statements: nothing of it reached the database.
    QUEUED = auto()
    #: In a group whose statement waits for a connection: still nothing sent.
    CONNECTING = auto()
    #: Its statement (its own commit, on an autocommit connection) was sent.
    SENT = auto()


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """What a statement says of one of its rows (``ord, locked, accepted`` columns)."""

    locked: bool
    accepted: bool


@dataclass(slots=True, eq=False)
class _Pending:
    row: Mapping[str, Any]
    future: asyncio.Future[RowOutcome | None]
    stage: Stage = Stage.QUEUED


class GroupCommit:
    """Writes what concurrent requests submit, grouped into as few statements as possible.

    ``statement(n)`` is the SQL that stores ``n`` applications given
    :func:`numbered_parameters`; it is cached per ``n``. At most ``max_in_flight``
    statements run at once (each on its own connection); whatever arrives meanwhile waits
    for the next one, up to ``max_rows`` applications per statement.

    Every wait is bounded by ``deadline_s`` (:mod:`runtime.deadline`): a request's own
    wait, and each statement's connection. When the database does not answer in time the
    request fails with :class:`~runtime.errors.WriteFailed`, whose outcome says whether
    its statement had been sent (``UNKNOWN``: it may commit once the database is back) or
    not (``NOT_STORED``).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        statement: Callable[[int], str],
        max_rows: int = 64,
        max_in_flight: int = 2,
        deadline_s: float = 2.0,
        exclusive: Callable[[Mapping[str, Any]], Hashable | None] | None = None,
    ) -> None:
        self._engine = engine
        self._statement = lru_cache(maxsize=max_rows)(statement)
        self._max_rows = max_rows
        self._max_in_flight = max_in_flight
        self._deadline_s = deadline_s
        self._exclusive = exclusive or (lambda _row: None)
        # Made on first use: a semaphore belongs to one event loop.
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[_Pending] = []
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(
        self, row: Mapping[str, Any], within_s: float | None = None
    ) -> RowOutcome | None:
        """Return once ``row``'s statement is committed: what it says of the row, if anything.

        Raises :class:`~runtime.errors.WriteFailed` when the database does not answer
        within ``within_s`` (default the whole deadline), and the database's own error
        when it refuses the row.
        """
        loop = asyncio.get_running_loop()
        if self._slots is None or loop is not self._loop:
            # An app served again on another loop (tests) gets a semaphore of its own.
            self._loop, self._slots = loop, asyncio.Semaphore(self._max_in_flight)
        slots = self._slots
        pending = _Pending(row, loop.create_future())
        self._waiting.append(pending)
        if not self._flushing:
            self._flushing = True
            self._keep(loop.create_task(self._flush(slots)))
        try:
            # Cancels only this request's future: the group's statement goes on for the
            # other requests in it (and settles nothing for this one).
            async with asyncio.timeout(self._deadline_s if within_s is None else within_s):
                return await pending.future
        except TimeoutError as error:
            if pending in self._waiting:
                self._waiting.remove(pending)
            raise WriteFailed(outcome_of(pending.stage)) from error

    def _keep(self, task: asyncio.Task[None]) -> None:
        # The event loop holds tasks weakly; a dropped one could vanish mid-write.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, slots: asyncio.Semaphore) -> None:
        try:
            while self._waiting:
                await slots.acquire()
                group = self._take_group()
                for pending in group:
                    pending.stage = Stage.CONNECTING
                if not group:  # every request waiting meanwhile gave up
                    slots.release()
                    continue
                self._keep(asyncio.get_running_loop().create_task(self._write(group, slots)))
        finally:
            self._flushing = False

    async def _write(self, group: list[_Pending], slots: asyncio.Semaphore) -> None:
        try:
            try:
                outcomes = await self._execute(group)
            except Exception as error:  # handed to the requests that wait for it
                if len(group) == 1 or not isinstance(error, IntegrityError | DataError):
                    # The database itself failed (down, frozen, pool exhausted): every
                    # request gets the error now, rather than one retry each after the other.
                    for pending in group:
                        _settle(pending, _as_write_failure(error, pending.stage))
                    return
                _log.warning(
                    "command.group_commit_failed", size=len(group), error=type(error).__name__
                )
                for pending in group:
                    try:
                        [outcome] = await self._execute([pending])
                    except Exception as alone:  # as above, for one request
                        _settle(pending, _as_write_failure(alone, pending.stage))
                    else:
                        _settle(pending, outcome)
                return
            for pending, outcome in zip(group, outcomes, strict=True):
                _settle(pending, outcome)
        finally:
            slots.release()

    def _take_group(self) -> list[_Pending]:
        """Up to ``max_rows`` waiting rows, no two of them exclusive of each other.

        A row whose exclusive key (an Idempotency-Key) is already in the group waits for
        the next statement: one statement must not claim one key twice.
        """
        group: list[_Pending] = []
        taken: set[Hashable] = set()
        kept: list[_Pending] = []
        for pending in self._waiting:
            key = self._exclusive(pending.row)
            if len(group) >= self._max_rows or (key is not None and key in taken):
                kept.append(pending)
                continue
            if key is not None:
                taken.add(key)
            group.append(pending)
        self._waiting[:] = kept
        return group

    async def _execute(self, group: list[_Pending]) -> list[RowOutcome | None]:
        for pending in group:
            pending.stage = Stage.CONNECTING
        async with bounded_connection(self._engine, self._deadline_s) as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for pending in group:
                pending.stage = Stage.SENT
            params = numbered_parameters(
                [{**pending.row, "ord": index} for index, pending in enumerate(group)]
            )
            result = await autocommit.exec_driver_sql(self._statement(len(group)), params)
            rows: list[Any] = list(result) if result.returns_rows else []
            said = {int(row[0]): RowOutcome(bool(row[1]), bool(row[2])) for row in rows}
        GROUP_SIZE.observe(len(group))
        return [said.get(index) for index in range(len(group))]


def outcome_of(stage: Stage) -> Outcome:
    """What a client may assume of an application that reached ``stage`` before a failure."""
    return Outcome.UNKNOWN if stage is Stage.SENT else Outcome.NOT_STORED


def _as_write_failure(error: Exception, stage: Stage) -> Exception:
    """A database that did not answer becomes :class:`WriteFailed`; a refusal stays itself."""
    if isinstance(error, DependencyUnavailable):
        return WriteFailed(outcome_of(stage))
    return error


def _settle(pending: _Pending, answer: RowOutcome | BaseException | None) -> None:
    future = pending.future
    if future.done():  # the request was cancelled (its client went away)
        return
    if isinstance(answer, BaseException):
        future.set_exception(answer)
    else:
        future.set_result(answer)
