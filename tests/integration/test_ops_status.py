"""``prequal-ops outbox status``: the outbox at a glance, for people and for scripts."""

from __future__ import annotations

import json

import psycopg

from ops.status import outbox_status
from runtime.settings import Settings
from tests.support.outbox import insert_many, relay_thread
from tests.support.processes import run_ops, wait_until


def test_status_counts_pending_rows_and_their_age(
    settings: Settings, db: psycopg.Connection
) -> None:
    insert_many(settings, 3)
    db.execute("UPDATE outbox SET occurred_at = now() - interval '90 seconds'")

    status = outbox_status(db, settings.debezium_slot)

    assert status.pending == 3
    assert status.oldest_pending_age_s is not None
    assert 89 <= status.oldest_pending_age_s < 120
    assert status.active_relay is None
    assert status.slot is None


def test_status_names_the_active_relay_and_counts_recent_publications(
    settings: Settings, db: psycopg.Connection
) -> None:
    insert_many(settings, 4)
    with relay_thread(settings) as relay:
        wait_until(lambda: outbox_status(db, settings.debezium_slot).pending == 0, 15)
        status = outbox_status(db, settings.debezium_slot)

    assert status.active_relay == relay.instance
    assert status.published_last_minute == 4
    assert status.oldest_pending_age_s is None


def test_the_status_command_prints_json_for_scripts(settings: Settings) -> None:
    insert_many(settings, 2)

    result = run_ops(settings, "outbox", "status", "--json")

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["pending"] == 2
    assert body["relay"] == "polling"
    assert body["slot"] is None


def test_the_status_command_prints_a_table_for_people(settings: Settings) -> None:
    result = run_ops(settings, "outbox", "status")

    assert result.returncode == 0, result.stderr
    assert "pending" in result.stdout
    assert "absent" in result.stdout


def test_an_unreachable_database_is_exit_code_1_with_a_clear_message(settings: Settings) -> None:
    from tests.support.processes import free_port

    result = run_ops(settings.model_copy(update={"pg_port": free_port()}), "outbox", "status")

    assert result.returncode == 1
    assert "database not reachable" in result.stderr


def test_topics_create_makes_every_topic_with_the_configured_partitions(
    settings: Settings,
) -> None:
    from confluent_kafka.admin import AdminClient

    result = run_ops(settings, "topics", "create")

    assert result.returncode == 0, result.stderr
    metadata = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers}).list_topics(
        timeout=10
    )
    for topic in (
        settings.topic_submitted,
        settings.topic_credit_reports,
        settings.topic_decisions,
        settings.topic_dlq,
    ):
        assert len(metadata.topics[topic].partitions) == settings.topic_partitions
