"""What people read from ``prequal-ops``: tables and sentences, not only ``--json``."""

from __future__ import annotations

import json

import psycopg

from runtime.kafka import ensure_topics
from runtime.settings import Settings
from tests.support.kafka import consume, count_at_least, produce
from tests.support.outbox import insert_many
from tests.support.processes import run_ops


def test_a_replay_dry_run_shows_a_table_of_what_would_be_sent(
    settings: Settings, db: psycopg.Connection
) -> None:
    ids = insert_many(settings, 12)

    result = run_ops(settings, "outbox", "replay", "--from-seq", "1", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "Would replay 12 events" in result.stdout
    assert ids[0] in result.stdout.replace("\n", "") or "event_id" in result.stdout
    assert "… and 2 more." in result.stdout
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (12,)


def test_a_replay_matching_nothing_says_so(settings: Settings) -> None:
    result = run_ops(settings, "outbox", "replay", "--type", "LoanApplicationDecided", "--yes")

    assert result.returncode == 0, result.stderr
    assert "nothing to replay" in result.stdout


def test_timestamps_without_an_offset_or_not_iso_are_refused(settings: Settings) -> None:
    naive = run_ops(settings, "outbox", "replay", "--since", "2026-11-22T10:00:00")
    garbage = run_ops(settings, "outbox", "replay", "--since", "yesterday-ish")
    no_rate = run_ops(settings, "outbox", "replay", "--from-seq", "1", "--rate", "0")

    assert (naive.returncode, garbage.returncode, no_rate.returncode) == (2, 2, 2)
    assert "no UTC offset" in naive.stderr
    assert "not an ISO-8601 timestamp" in garbage.stderr


def test_declining_the_prompt_replays_nothing_and_exits_3(
    settings: Settings, db: psycopg.Connection
) -> None:
    insert_many(settings, 2)

    result = run_ops(settings, "outbox", "replay", "--from-seq", "1", answer="n\n")

    assert result.returncode == 3
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (2,)


def _dead_letter(settings: Settings) -> None:
    produce(
        settings,
        settings.topic_dlq,
        [
            (
                "app-1",
                b'{"broken": true}',
                [
                    ("event_id", b"ev-1"),
                    ("dlq_source_topic", settings.topic_credit_reports.encode()),
                    ("dlq_source_partition", b"0"),
                    ("dlq_source_offset", b"7"),
                    ("dlq_consumer", b"decision-worker"),
                    ("dlq_reason", b"application app-1 does not exist"),
                    ("dlq_failed_at", b"2026-11-22T01:00:00+00:00"),
                ],
            )
        ],
    )


def test_dead_letters_are_listed_shown_and_redriven_in_plain_text(settings: Settings) -> None:
    ensure_topics(settings)
    _dead_letter(settings)

    listed = run_ops(settings, "dlq", "list")
    shown = run_ops(settings, "dlq", "show", "0", "--json")
    dry = run_ops(settings, "dlq", "redrive", "--all", "--dry-run")
    done = run_ops(settings, "dlq", "redrive", "--all", "--yes")

    assert listed.returncode == 0, listed.stderr
    assert "reason: application app-1 does not exist" in listed.stdout
    assert json.loads(shown.stdout)["headers"]["dlq_consumer"] == "decision-worker"
    assert "Would redrive 1 dead letters" in dry.stdout
    assert done.returncode == 0, done.stderr
    assert "Redrove 1 dead letters." in done.stdout
    [back] = consume(settings, settings.topic_credit_reports, until=count_at_least(1))
    assert back.value == b'{"broken": true}'
    assert back.headers["event_id"] == "ev-1"
    assert "dlq_reason" not in back.headers
    assert back.headers["dlq_redriven_from"].endswith(":0")


def test_an_offset_with_no_dead_letter_is_a_bad_parameter(settings: Settings) -> None:
    _dead_letter(settings)

    result = run_ops(settings, "dlq", "show", "99")

    assert result.returncode == 2
    assert "no dead letter at offset 99" in result.stderr
