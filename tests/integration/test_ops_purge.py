"""``prequal-ops outbox purge``: published rows past retention go, unpublished rows never."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import psycopg
import pytest

from ops.purge import parse_duration, plan_purge, purge
from runtime.settings import Settings
from tests.support.outbox import insert_many
from tests.support.processes import free_port, run_ops


def _arrange(settings: Settings, db: psycopg.Connection) -> dict[str, set[str]]:
    """5 rows published 2 days ago, 1 a minute ago, 1 unpublished that occurred 3 days ago."""
    old, recent, unpublished = (
        insert_many(settings, 5),
        insert_many(settings, 1),
        insert_many(settings, 1),
    )
    db.execute(
        "UPDATE outbox SET published_at = now() - interval '2 days' WHERE event_id = ANY(%s)",
        ([uuid.UUID(e) for e in old],),
    )
    db.execute(
        "UPDATE outbox SET published_at = now() - interval '1 minute' WHERE event_id = ANY(%s)",
        ([uuid.UUID(e) for e in recent],),
    )
    db.execute(
        "UPDATE outbox SET occurred_at = now() - interval '3 days' WHERE event_id = ANY(%s)",
        ([uuid.UUID(e) for e in unpublished],),
    )
    return {"old": set(old), "recent": set(recent), "unpublished": set(unpublished)}


def _remaining(db: psycopg.Connection) -> set[str]:
    return {str(row[0]) for row in db.execute("SELECT event_id FROM outbox").fetchall()}


def _insert_keys(db: psycopg.Connection, expired: int, live: int) -> None:
    for number in range(expired + live):
        expires = "now() - interval '1 hour'" if number < expired else "now() + interval '1 day'"
        db.execute(
            "INSERT INTO idempotency_keys (key, fingerprint, application_id, expires_at)"
            f" VALUES (%s, 'f', %s, {expires})",
            (f"key-{number}", uuid.uuid4()),
        )


def _keys(db: psycopg.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT key FROM idempotency_keys").fetchall()}


def test_purge_deletes_only_published_rows_older_than_the_cutoff_in_batches(
    settings: Settings, db: psycopg.Connection
) -> None:
    rows = _arrange(settings, db)

    plan = plan_purge(db, timedelta(days=1))
    result = purge(db, plan, batch_size=2)

    assert plan.outbox_rows == 5
    assert result.outbox_rows == 5
    assert result.batches == 3 + 1, "2 + 2 + 1 outbox rows, then one (empty) batch of keys"
    assert _remaining(db) == rows["recent"] | rows["unpublished"]


def test_an_old_unpublished_row_is_never_purged_however_short_the_retention(
    settings: Settings, db: psycopg.Connection
) -> None:
    rows = _arrange(settings, db)

    purge(db, plan_purge(db, timedelta(seconds=1)))

    assert _remaining(db) == rows["unpublished"]


def test_expired_idempotency_keys_are_purged_and_live_ones_kept(
    settings: Settings, db: psycopg.Connection
) -> None:
    _insert_keys(db, expired=3, live=2)

    plan = plan_purge(db, timedelta(days=7))
    result = purge(db, plan, batch_size=2)

    assert (plan.idempotency_keys, result.idempotency_keys) == (3, 3)
    assert _keys(db) == {"key-3", "key-4"}


@pytest.mark.parametrize("text", ["7", "d", "0d", "-1h", "1.5h", "7 d", "7days", "1w", "1000000d"])
def test_durations_are_a_positive_whole_number_and_one_unit(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_durations_read_seconds_minutes_hours_and_days() -> None:
    assert [parse_duration(t) for t in ("45s", "30m", "12h", "7d")] == [
        timedelta(seconds=45),
        timedelta(minutes=30),
        timedelta(hours=12),
        timedelta(days=7),
    ]


def test_the_dry_run_reports_both_counts_and_deletes_nothing(
    settings: Settings, db: psycopg.Connection
) -> None:
    _arrange(settings, db)
    _insert_keys(db, expired=1, live=1)

    result = run_ops(settings, "outbox", "purge", "--older-than", "1d", "--dry-run", "--json")

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["dry_run"], body["outbox_rows"], body["idempotency_keys"]) == (True, 5, 1)
    assert len(_remaining(db)) == 7
    assert len(_keys(db)) == 2


def test_the_command_deletes_in_batches_and_reports_both_counts(
    settings: Settings, db: psycopg.Connection
) -> None:
    rows = _arrange(settings, db)
    _insert_keys(db, expired=1, live=1)

    result = run_ops(
        settings, "outbox", "purge", "--older-than", "12h", "--batch-size", "2", "--yes"
    )

    assert result.returncode == 0, result.stderr
    assert "Deleted 5 published outbox rows" in result.stdout
    assert "and 1 expired idempotency keys" in result.stdout
    assert _remaining(db) == rows["recent"] | rows["unpublished"]
    assert _keys(db) == {"key-1"}


def test_a_bad_older_than_is_exit_code_2_and_deletes_nothing(
    settings: Settings, db: psycopg.Connection
) -> None:
    _arrange(settings, db)

    result = run_ops(settings, "outbox", "purge", "--older-than", "7 days", "--yes")

    assert result.returncode == 2
    assert "not a duration" in result.stderr
    assert len(_remaining(db)) == 7


def test_an_unreachable_database_is_exit_code_1(settings: Settings) -> None:
    down = settings.model_copy(update={"pg_port": free_port()})

    result = run_ops(down, "outbox", "purge", "--older-than", "7d", "--yes")

    assert result.returncode == 1
    assert "database not reachable" in result.stderr
