"""The CDC slot: bounded while the outbox is quiet, and reset only with Connect's offsets.

A logical slot keeps every WAL segment from its confirmed position on, and the WAL is
the whole cluster's. While only other tables (or other databases) are written, pgoutput
sends Debezium nothing for the outbox, so without a heartbeat the confirmed position
never moves and the slot retains everything written after it.

Connect's offsets and the slot are one piece of state. Offsets read from one slot make a
task on another fail ("... is no longer available on the server"), and a slot without
its offsets is read from the current WAL position. So ``infra/local.sh up connect``
checks the offsets against the slot before each start, and ``prequal-ops cdc
reset-slot`` resets both through Connect's REST API (KIP-875), for a Connect cluster
whose offsets live in a topic. Either way the outbox-relay's hand-over publishes what
was committed while no slot streamed.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest

from ops.connect_admin import ConnectAdmin, drop_slot, read_slot
from outbox.cdc import CdcRelay
from runtime.kafka import ensure_topics
from runtime.settings import Settings
from tests.support.infra import connect_running, local
from tests.support.infra import drop_slot as drop_test_slot
from tests.support.kafka import consume, event_ids, has_events
from tests.support.outbox import LoopThread, insert_many
from tests.support.processes import run_ops, wait_until

HEARTBEAT = {"debezium_heartbeat_interval_ms": 1000}

MIB = 1024 * 1024
# ~1 MiB of WAL per 1,000 rows. The heartbeat test writes at ~2 MiB/s for ~12 s, several
# times the slot's lag behind a 1 s heartbeat (about 3 s on a loaded machine), so a
# bounded slot retains well under half of it; the test without writes it at once.
SLOW = (24, 1_000, 0.5)  # chunks, rows per chunk, seconds between chunks
FAST = (12, 2_000, 0.0)

_RETAINED = """
    SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
      FROM pg_replication_slots WHERE slot_name = %s
"""


@pytest.fixture
def filler(db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """A table outside the publication, in the outbox's database, dropped afterwards."""
    db.execute("CREATE TABLE IF NOT EXISTS wal_filler (v text)")
    yield db
    db.execute("DROP TABLE IF EXISTS wal_filler")


def _retained(db: psycopg.Connection, slot: str) -> int:
    row = db.execute(_RETAINED, (slot,)).fetchone()
    assert row is not None, f"no slot {slot}"
    return int(row[0])


def _write_other_tables(
    db: psycopg.Connection, slot: str, pace: tuple[int, int, float]
) -> tuple[int, int]:
    """Write ~25 MiB of WAL to ``wal_filler`` only; return (bytes written, peak retained)."""
    chunks, rows, pause_s = pace
    start = db.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert start is not None
    peak = 0
    for _ in range(chunks):
        db.execute(
            "INSERT INTO wal_filler SELECT repeat('x', 1000) FROM generate_series(1, %s)",
            (rows,),
        )
        peak = max(peak, _retained(db, slot))
        time.sleep(pause_s)
    row = db.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", start)
    written = row.fetchone()
    assert written is not None
    return int(written[0]), peak


def _settle(db: psycopg.Connection, slot: str, below: int, within_s: float) -> int:
    """Retained WAL once it is below ``below`` bytes, or after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    retained = _retained(db, slot)
    while retained >= below and time.monotonic() < deadline:
        time.sleep(0.5)
        retained = _retained(db, slot)
    return retained


@pytest.fixture(scope="module")
def cdc(base_settings: Settings) -> Iterator[None]:
    """Kafka Connect with the outbox connector on the test database, for this module."""
    with connect_running(base_settings.model_copy(update=HEARTBEAT)):
        yield


@pytest.fixture
def cdc_settings(cdc: None, settings: Settings) -> Settings:
    """Per-test settings whose topics exist; Connect running (again, if a test stopped it)."""
    settings = settings.model_copy(update=HEARTBEAT)
    ensure_topics(settings)
    local("up", "connect", settings=settings)
    return settings


def _ops(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``prequal-ops ARGS`` as its own process (stdout and stderr apart), reading ``settings``.

    Not Typer's in-process runner: the command configures logging on the runner's
    stream, which the runner closes, and every later test's log line would then fail.
    """
    return run_ops(settings, *args)


def _unpublished(db: psycopg.Connection, event_ids: list[str]) -> int:
    row = db.execute(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL AND event_id::text = ANY(%s)",
        (event_ids,),
    ).fetchone()
    return int(row[0]) if row else -1


def _lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def test_while_only_other_tables_are_written_the_slot_retains_a_bounded_amount_of_wal(
    cdc_settings: Settings, filler: psycopg.Connection
) -> None:
    written, peak = _write_other_tables(filler, cdc_settings.debezium_slot, SLOW)
    after = _settle(filler, cdc_settings.debezium_slot, below=written // 8, within_s=15)

    print(f"heartbeat 1 s: wrote {written / MIB:.1f} MiB, peak retained {peak / MIB:.1f} MiB,")
    print(f"  retained {after / MIB:.2f} MiB once quiet")
    assert written > 20 * MIB
    # Each heartbeat confirms what was written up to it: the slot lags by about one
    # heartbeat period of WAL, not by everything since the outbox was last written.
    assert peak < written / 2
    assert after < written / 8


@pytest.mark.parametrize("made_anew", [False, True], ids=["slot dropped", "slot made anew"])
def test_offsets_left_by_another_slot_neither_stop_the_connector_nor_lose_rows(
    cdc_settings: Settings, db: psycopg.Connection, made_anew: bool
) -> None:
    slot = cdc_settings.debezium_slot
    # The confirmer handed over to this slot long ago: it will not do so again by itself.
    db.execute(
        "INSERT INTO relay_handover (slot_name, up_to_seq, completed_at) VALUES (%s, 0, now())",
        (slot,),
    )
    streamed = insert_many(cdc_settings, 5)
    consume(cdc_settings, cdc_settings.topic_submitted, until=has_events(set(streamed)))
    local("down", "connect", settings=cdc_settings)
    # As when the database is recreated, or the slot dropped by hand: the offsets stay.
    assert drop_slot(db, slot, timeout_s=10) is not None
    missed = insert_many(cdc_settings, 5)  # no slot: nothing will stream these
    if made_anew:  # by hand, or by another Connect: the old offsets point before it
        db.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))

    started = local("up", "connect", settings=cdc_settings)
    loop = LoopThread(CdcRelay(cdc_settings).run)  # its hand-over publishes `missed`
    try:
        after = insert_many(cdc_settings, 5)
        wait_until(lambda: _unpublished(db, missed + after) == 0, 30)
    finally:
        loop.stop()
    expected = set(streamed + missed + after)
    messages = consume(cdc_settings, cdc_settings.topic_submitted, until=has_events(expected))

    if made_anew:
        assert f"offsets for slot {slot} are missing, another database's or older" in started
    else:
        assert f"no slot {slot}: removing Connect's offsets" in started
    assert set(event_ids(messages)) == expected


def test_reset_slot_stops_drops_resets_the_offsets_resumes_and_hands_over(
    cdc_settings: Settings, db: psycopg.Connection
) -> None:
    slot = cdc_settings.debezium_slot
    with contextlib.closing(
        ConnectAdmin(cdc_settings.connect_url, cdc_settings.debezium_connector)
    ) as admin:
        streamed = insert_many(cdc_settings, 5)
        consume(cdc_settings, cdc_settings.topic_submitted, until=has_events(set(streamed)))
        admin.stop()  # an outage of the stream: what is committed now waits in the slot
        admin.wait_for(lambda state: state.stopped, "STOPPED", 30)
        [old] = admin.offsets()
        stranded = insert_many(cdc_settings, 5)

        dry_run = _ops(cdc_settings, "cdc", "reset-slot", "--dry-run")
        unknown = cdc_settings.model_copy(update={"debezium_connector": "no-such-connector"})
        refused = _ops(unknown, "cdc", "reset-slot", "--yes")
        result = run_ops(cdc_settings, "cdc", "reset-slot", "--yes")  # as an operator would

        after = insert_many(cdc_settings, 5)  # streamed from the new slot
        expected = set(streamed + stranded + after)
        messages = consume(cdc_settings, cdc_settings.topic_submitted, until=has_events(expected))
        state = admin.state()
        new_slot = read_slot(db, slot)

    assert dry_run.returncode == 0, dry_run.stderr
    assert f"Would stop connector {admin.connector}" in dry_run.stdout
    assert refused.returncode == 2
    assert "connector no-such-connector is not registered" in refused.stderr
    assert result.returncode == 0, result.stderr
    assert f"dropped slot {slot}" in result.stdout
    # Nobody had confirmed `streamed` (no confirmer runs here): the hand-over sends it too.
    assert "hand-over published 10 rows" in result.stdout
    assert set(event_ids(messages)) == expected
    assert _unpublished(db, stranded) == 0
    assert state.running
    assert new_slot is not None
    assert new_slot.confirmed_flush_lsn is not None
    newer = db.execute(
        "SELECT %s::pg_lsn > %s::pg_lsn",
        (new_slot.confirmed_flush_lsn, _lsn_text(int(old["offset"]["lsn"]))),
    ).fetchone()
    assert newer == (True,)  # a new slot, read from where it was made


def test_a_slot_made_in_another_database_is_refused_by_name(settings: Settings) -> None:
    slot = settings.debezium_slot
    elsewhere = settings.model_copy(update={"pg_database": "postgres"})
    local("down", "connect", settings=settings)
    drop_test_slot(settings)  # the module's connector made one in the test database
    with psycopg.connect(elsewhere.psycopg_conninfo, autocommit=True) as other:
        other.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        try:
            with pytest.raises(RuntimeError, match=f"{slot} belongs to database postgres"):
                local("up", "connect", settings=settings)
            result = _ops(settings, "cdc", "reset-slot", "--yes")
        finally:
            other.execute("SELECT pg_drop_replication_slot(%s)", (slot,))

    assert result.returncode == 2
    assert f"slot {slot} belongs to database postgres" in result.stderr


# Last in the module: it stops the module's connector and runs one without a heartbeat.
def test_without_the_heartbeat_the_slot_retains_everything_other_tables_write(
    settings: Settings, filler: psycopg.Connection
) -> None:
    silent = settings.model_copy(update={"debezium_heartbeat_interval_ms": 0})
    with connect_running(silent):
        written, _ = _write_other_tables(filler, silent.debezium_slot, FAST)
        time.sleep(2)  # two would-be heartbeat periods of the test above
        after = _retained(filler, silent.debezium_slot)

    print(f"no heartbeat: wrote {written / MIB:.1f} MiB, retained {after / MIB:.1f} MiB")
    assert after >= written  # the trap the heartbeat avoids
