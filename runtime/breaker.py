"""The circuit breaker in front of an API's database (purgatory).

After ``threshold`` consecutive requests fail because the database did not answer in
time (:class:`~runtime.errors.DependencyUnavailable`), the breaker opens: for
``open_s`` seconds every request is answered 503 at once instead of waiting out its
deadline and piling more connections onto a sick server. Then it is half-open: the next
requests try the database; one success closes it, one failure opens it again. Only
"the database is not answering" counts; a 404, a 422 or a conflict is the request's own
problem and says nothing about the database.

The state is the gauge ``prequal_db_circuit_breaker_state`` (0 closed, 1 half-open,
2 open) and part of every ``/health`` body.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import Gauge
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from runtime.errors import DependencyUnavailable
from runtime.logging import get_logger

BREAKER_STATE = Gauge(
    "prequal_db_circuit_breaker_state",
    "State of the API's circuit breaker in front of the database: 0 closed, 1 half-open,"
    " 2 open.",
    ["service"],
    multiprocess_mode="max",
)
_STATE_VALUES = {"closed": 0, "half-opened": 1, "opened": 2}
_CIRCUIT = "database"
_log = get_logger(__name__)


def _not_a_database_failure(error: BaseException) -> bool:
    return not isinstance(error, DependencyUnavailable)


class DatabaseBreaker:
    """Guards one API process's database work; see the module docstring."""

    def __init__(self, service: str, threshold: int, open_s: float) -> None:
        self._service = service
        self._open_s = open_s
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=threshold,
            default_ttl=open_s,
            exclude=[(BaseException, _not_a_database_failure)],
        )
        self._factory.add_listener(self._on_event)
        self.state = "closed"
        self._opened_at = 0.0
        BREAKER_STATE.labels(service).set(0)

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run the block unless the breaker is open.

        Raises :class:`DependencyUnavailable` ("database") at once while it is open, with
        ``Retry-After`` set to the seconds until it lets a request through again.
        """
        breaker = await self._factory.get_breaker(_CIRCUIT)
        try:
            async with breaker:
                yield
        except OpenedState as error:
            raise DependencyUnavailable("database", self._retry_after_s()) from error

    def _retry_after_s(self) -> int:
        remaining = self._opened_at + self._open_s - time.time()
        return max(1, math.ceil(remaining))

    def _on_event(self, _name: str, event_type: str, event: Any) -> None:
        if event_type != "state_changed":
            return
        self.state = str(event.state)
        if event.opened_at is not None:
            self._opened_at = float(event.opened_at)
        BREAKER_STATE.labels(self._service).set(_STATE_VALUES.get(self.state, 0))
        _log.warning("database.circuit_breaker", service=self._service, state=self.state)
