"""Reset the Debezium relay's position: the replication slot and Connect's offsets together.

Connect's stored source offsets (Debezium's LSN) and the replication slot are one piece
of state. Offsets from another slot make the task fail ("... is no longer available on
the server") or skip changes; a slot whose offsets are gone is read from the current WAL
position, skipping what was committed while nothing streamed. Where Connect runs in
distributed mode its offsets live in a Kafka topic, out of reach of ``infra/local.sh``;
:func:`reset_slot` resets both through Connect's REST API (KIP-875, Kafka 3.5+):

1. ``PUT /connectors/{name}/stop`` and wait until the connector is ``STOPPED``;
2. drop the slot once its walsender has let go of it;
3. forget the slot's hand-over record, so the new slot gets a hand-over of its own;
4. ``DELETE /connectors/{name}/offsets`` (allowed on a stopped connector only);
5. ``PUT /connectors/{name}/resume`` and wait until it runs and has made a new slot;
6. the hand-over (:meth:`outbox.cdc.CdcRelay.catch_up`): publish the rows committed
   while no slot streamed, the polling way. Rows Debezium sent but nobody had confirmed
   yet are sent again; the consumers' inboxes apply them once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import psycopg

from outbox.cdc import CdcRelay
from runtime.db import connect
from runtime.settings import Settings

_POLL_S = 0.25


class ConnectError(Exception):
    """Kafka Connect did not answer, refused a request, or did not reach a state in time."""


class ConnectorMissing(ConnectError):
    """The connector is not registered on this Connect cluster."""


class SlotError(Exception):
    """The replication slot is another database's: resetting it here is refused."""


class SlotBusy(Exception):
    """A walsender still holds the replication slot (another reader?) after the timeout."""


@dataclass(frozen=True)
class ConnectorState:
    """``GET /connectors/{name}/status`` in short: the connector's and its tasks' states."""

    connector: str
    tasks: list[str]

    @property
    def running(self) -> bool:
        """The connector and every task (at least one) are RUNNING."""
        return self.connector == "RUNNING" and bool(self.tasks) and set(self.tasks) == {"RUNNING"}

    @property
    def stopped(self) -> bool:
        """Stopped (KIP-875): no task left, offsets may be changed."""
        return self.connector == "STOPPED" and not self.tasks

    def __str__(self) -> str:
        return f"connector {self.connector}, tasks {' '.join(self.tasks) or 'none'}"


class ConnectAdmin:
    """The REST calls on one connector of a Kafka Connect cluster (standalone or distributed).

    ``url`` is the REST base URL (``http://connect:8083``). Every call raises
    :class:`ConnectorMissing` on 404 and :class:`ConnectError` when Connect does not
    answer within ``timeout_s`` seconds or answers with another error.
    """

    def __init__(self, url: str, connector: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.connector = connector
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s)

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def _call(self, method: str, path: str) -> Any:
        where = f"{method} {self.url}/connectors/{self.connector}{path}"
        try:
            response = self._client.request(method, f"/connectors/{self.connector}{path}")
        except httpx.HTTPError as error:
            raise ConnectError(f"{where}: {error or type(error).__name__}") from error
        if response.status_code == 404:
            raise ConnectorMissing(f"connector {self.connector} is not registered on {self.url}")
        if response.is_error:
            raise ConnectError(f"{where} answered HTTP {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def state(self) -> ConnectorState:
        """The connector's state and its tasks' states."""
        body = self._call("GET", "/status")
        return ConnectorState(
            str(body["connector"]["state"]), [str(t["state"]) for t in body.get("tasks", [])]
        )

    def offsets(self) -> list[dict[str, Any]]:
        """The stored source offsets: ``[{"partition": {...}, "offset": {"lsn": ...}}]``."""
        return list(self._call("GET", "/offsets")["offsets"])

    def stop(self) -> None:
        """Ask the connector to stop (its tasks shut down, its config stays)."""
        self._call("PUT", "/stop")

    def resume(self) -> None:
        """Ask a stopped or paused connector to run again."""
        self._call("PUT", "/resume")

    def reset_offsets(self) -> str:
        """Delete the stored offsets of the (stopped) connector; return Connect's message."""
        return str(self._call("DELETE", "/offsets").get("message", ""))

    def wait_for(
        self, done: Callable[[ConnectorState], bool], what: str, timeout_s: float
    ) -> ConnectorState:
        """Poll the status until ``done`` holds; :class:`ConnectError` after ``timeout_s``.

        Waiting for RUNNING ends at once when the connector or a task FAILED.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.state()
            if done(state):
                return state
            if what == "RUNNING" and "FAILED" in (state.connector, *state.tasks):
                raise ConnectError(f"connector {self.connector} failed ({state})")
            if time.monotonic() >= deadline:
                raise ConnectError(f"connector {self.connector} not {what} after {timeout_s:g} s")
            time.sleep(_POLL_S)


@dataclass(frozen=True)
class SlotState:
    """A replication slot: its database, whether a walsender holds it, its position."""

    name: str
    database: str
    active: bool
    confirmed_flush_lsn: str | None
    retained_wal_bytes: int


_SLOT = """
    SELECT database, active, confirmed_flush_lsn::text,
           coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint
      FROM pg_replication_slots WHERE slot_name = %s
"""


def read_slot(conn: psycopg.Connection, slot: str) -> SlotState | None:
    """The slot named ``slot`` (in any database), or None."""
    row = conn.execute(_SLOT, (slot,)).fetchone()
    if row is None:
        return None
    return SlotState(slot, str(row[0]), bool(row[1]), row[2], int(row[3]))


def drop_slot(conn: psycopg.Connection, slot: str, timeout_s: float) -> SlotState | None:
    """Drop ``slot`` once no walsender holds it; return what it was (None: there was none).

    A stopped connector's walsender may hold the slot for a moment longer. Raises
    :class:`SlotBusy` if it is still held after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while (state := read_slot(conn, slot)) is not None and state.active:
        if time.monotonic() >= deadline:
            raise SlotBusy(f"slot {slot} is still in use after {timeout_s:g} s")
        time.sleep(_POLL_S)
    if state is not None:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (slot,),
        )
    return state


def wait_for_slot(conn: psycopg.Connection, slot: str, timeout_s: float) -> SlotState:
    """Wait until ``slot`` exists (the resumed connector makes it); ConnectError if not."""
    deadline = time.monotonic() + timeout_s
    while (state := read_slot(conn, slot)) is None:
        if time.monotonic() >= deadline:
            raise ConnectError(f"no slot {slot} {timeout_s:g} s after resuming the connector")
        time.sleep(_POLL_S)
    return state


@dataclass
class ResetReport:
    """What :func:`reset_slot` did, for the operator."""

    connector: str
    slot: str
    dropped: SlotState | None = None
    old_offsets: list[dict[str, Any]] = field(default_factory=list)
    offsets_message: str = ""
    new_slot: SlotState | None = None
    handed_over: int = 0

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


Step = Callable[[str], None]


def check_slot_database(conn: psycopg.Connection, slot: str) -> SlotState | None:
    """The slot, refusing (:class:`SlotError`) one made in another database than ``conn``'s."""
    state = read_slot(conn, slot)
    here = conn.execute("SELECT current_database()").fetchone()
    if state is not None and here is not None and state.database != here[0]:
        raise SlotError(
            f"slot {slot} belongs to database {state.database}, not {here[0]}:"
            " check PREQUAL_PG_DATABASE and PREQUAL_DEBEZIUM_SLOT"
        )
    return state


def reset_slot(
    settings: Settings,
    admin: ConnectAdmin,
    conn: psycopg.Connection,
    timeout_s: float = 60.0,
    on_step: Step = lambda _line: None,
) -> ResetReport:
    """Stop the connector, drop the slot, reset the offsets, resume, and hand over.

    ``conn`` is an autocommit connection to the outbox database. ``on_step`` receives one
    line per step done. Raises :class:`ConnectError`, :class:`ConnectorMissing`,
    :class:`SlotError` or :class:`SlotBusy`, and what the hand-over's producer raises
    (``KafkaException``, ``DeliveryFailed``). A step that fails leaves the earlier ones
    done: the connector may stay stopped (running this again finishes the reset), or an
    unfinished hand-over stays recorded (the outbox-relay finishes it when it restarts).
    """
    slot = settings.debezium_slot
    report = ResetReport(admin.connector, slot)
    check_slot_database(conn, slot)
    admin.stop()
    admin.wait_for(lambda s: s.stopped, "STOPPED", timeout_s)
    report.old_offsets = admin.offsets()
    on_step(f"stopped connector {admin.connector}")
    report.dropped = drop_slot(conn, slot, timeout_s)
    conn.execute("DELETE FROM relay_handover WHERE slot_name = %s", (slot,))
    dropped = report.dropped
    on_step(
        f"dropped slot {slot} (it retained {dropped.retained_wal_bytes:,} bytes of WAL)"
        if dropped
        else f"no slot {slot} to drop"
    )
    report.offsets_message = admin.reset_offsets()
    on_step(f"reset the connector's offsets ({len(report.old_offsets)} partition(s) had some)")
    admin.resume()
    admin.wait_for(lambda s: s.running, "RUNNING", timeout_s)
    report.new_slot = wait_for_slot(conn, slot, timeout_s)
    on_step(f"resumed connector {admin.connector}; new slot {slot}")
    report.handed_over = hand_over(settings)
    on_step(f"hand-over published {report.handed_over} rows committed while no slot streamed")
    return report


def hand_over(settings: Settings) -> int:
    """Publish what was committed before the new slot existed; return how many rows.

    The running confirmer did its hand-over when it started, for the old slot; this is
    the new slot's, done here the same way (recorded in ``relay_handover``). The slot
    exists already, so nothing here waits for it.
    """
    with connect(settings, "prequal-ops") as work:
        return CdcRelay(settings).catch_up(work, threading.Event())
