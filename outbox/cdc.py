"""The relay process under Debezium: hand over from polling, then confirm deliveries.

With ``PREQUAL_RELAY=debezium`` Kafka Connect's outbox event router publishes the
outbox, and nothing would ever write ``published_at``. This process keeps the outbox's
bookkeeping true instead, so the ops view (pending count, oldest pending age) and purge
(published rows only) mean the same under both relays:

1. **Hand-over catch-up.** Debezium streams what commits after its replication slot was
   created (``snapshot.mode=no_data``). Rows committed before that, and not yet published
   by the polling relay, would never be streamed; so once the slot exists this process
   drains the unpublished rows up to the newest ``seq`` it saw, the polling way. A row
   that both drain and stream is delivered twice, only in this hand-over window, and the
   consumers' inboxes make the second delivery a no-op.
2. **Confirmation.** It then reads the outbox topics (``read_committed``) and marks each
   delivered row published, by the ``outbox_row_id`` header both relays set, committing
   the Kafka offsets only after the database commit.

It holds the same advisory lock as the polling relay, so the two never run at once.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence

import psycopg
from confluent_kafka import Consumer, KafkaException, Message

from messaging.headers import OUTBOX_ROW_ID, header_value
from messaging.metrics import LagReporter
from messaging.tracing import ConsumedBatch
from outbox.metrics import RELAY_PUBLISH_LATENCY, RELAY_PUBLISHED
from outbox.relay import MAX_SEQ, PollingRelay, acquire_leadership
from runtime.db import connect
from runtime.kafka import consumer_config, ensure_topics, next_batch, next_offsets
from runtime.logging import get_logger
from runtime.process import Backoff
from runtime.settings import Settings

_log = get_logger(__name__)

_CONFIRM = """
    UPDATE outbox SET published_at = now()
     WHERE id = ANY(%s) AND published_at IS NULL
 RETURNING id, extract(epoch FROM occurred_at)::float8, replay_of IS NOT NULL
"""


#: How often the confirmer checks that its hand-over record still exists, in seconds.
_HANDOVER_CHECK_S = 5.0


class CdcRelay:
    """The active relay process when Debezium publishes the outbox."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._polling = PollingRelay(settings)
        self.instance = self._polling.instance.replace("outbox-relay", "outbox-confirmer", 1)

    def run(self, stop: threading.Event) -> None:
        """Catch up, then confirm until ``stop`` is set, surviving outages of either server."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                with connect(self._settings, self.instance, autocommit=True) as control:
                    retry_s = self._settings.relay_standby_retry_s
                    if not acquire_leadership(control, stop, self.instance, retry_s):
                        continue
                    with connect(self._settings, self.instance) as work:
                        while not stop.is_set():  # confirm() returns after a slot reset
                            self.catch_up(work, stop)
                            self.confirm(work, stop)
            except (psycopg.OperationalError, KafkaException) as error:
                _log.warning("confirmer.unavailable", error=str(error).strip())
                stop.wait(backoff.next())
        _log.info("relay.stopped", instance=self.instance, relay="debezium")

    # --- 1. hand-over ---------------------------------------------------------------------

    def catch_up(self, work: psycopg.Connection, stop: threading.Event) -> int:
        """Once the slot exists, publish what was committed before it; return how many.

        The bound is recorded in ``relay_handover`` the first time, so a restarted
        confirmer resumes the same hand-over instead of re-publishing rows that Debezium
        delivered while it was down. The polling relay clears the record when it becomes
        active: the next switch to CDC is a new hand-over.
        """
        slot = self._settings.debezium_slot
        while not stop.is_set() and not self._slot_exists(work):
            _log.info("confirmer.waiting_for_slot", slot=slot)
            stop.wait(1.0)
        with work.transaction():
            work.execute(
                "INSERT INTO relay_handover (slot_name, up_to_seq)"
                " SELECT %s, coalesce(max(seq), 0) FROM outbox ON CONFLICT DO NOTHING",
                (slot,),
            )
            row = work.execute(
                "SELECT up_to_seq, completed_at IS NOT NULL FROM relay_handover"
                " WHERE slot_name = %s",
                (slot,),
            ).fetchone()
        up_to_seq, done = (int(row[0]), bool(row[1])) if row else (0, True)
        if done:
            return 0
        published = self._polling.drain(work, stop, up_to_seq=min(up_to_seq, MAX_SEQ))
        if not stop.is_set():
            with work.transaction():
                work.execute(
                    "UPDATE relay_handover SET completed_at = now() WHERE slot_name = %s",
                    (slot,),
                )
        _log.info("confirmer.caught_up", up_to_seq=up_to_seq, published=published)
        return published

    def _slot_exists(self, work: psycopg.Connection) -> bool:
        row = work.execute(
            "SELECT 1 FROM pg_replication_slots"
            " WHERE slot_name = %s AND database = current_database()",
            (self._settings.debezium_slot,),
        ).fetchone()
        work.commit()
        return row is not None

    # --- 2. confirmation --------------------------------------------------------------------

    def confirm(self, work: psycopg.Connection, stop: threading.Event) -> None:
        """Mark rows published as their messages appear on the outbox topics."""
        settings = self._settings
        ensure_topics(settings, settings.outbox_topics)
        lag = LagReporter("outbox-confirmer").config(settings)
        consumer = Consumer(consumer_config(settings, settings.group_confirmer, **lag))
        consumer.subscribe(settings.outbox_topics)
        next_check = time.monotonic() + _HANDOVER_CHECK_S
        try:
            while not stop.is_set():
                messages = next_batch(
                    consumer,
                    settings.consumer_batch_size,
                    linger_s=settings.consumer_batch_linger_ms / 1000,
                )
                batch = [m for m in messages if m.error() is None]
                if batch:
                    # Traced like a consume loop: the batch span holds the UPDATE, and
                    # each message's span continues its application's trace.
                    with ConsumedBatch("outbox-confirmer", settings.group_confirmer, batch):
                        self.mark_published(work, batch)
                        consumer.commit(offsets=next_offsets(batch), asynchronous=False)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + _HANDOVER_CHECK_S
                    if not self._handover_recorded(work):
                        # The slot was reset (infra/local.sh, prequal-ops cdc reset-slot):
                        # back to catch_up, which publishes what no slot streamed.
                        _log.info("confirmer.handover_reset", slot=settings.debezium_slot)
                        return
        finally:
            consumer.close()

    def _handover_recorded(self, work: psycopg.Connection) -> bool:
        row = work.execute(
            "SELECT 1 FROM relay_handover WHERE slot_name = %s", (self._settings.debezium_slot,)
        ).fetchone()
        work.commit()
        return row is not None

    def mark_published(self, work: psycopg.Connection, batch: Sequence[Message]) -> int:
        """Set ``published_at`` on the rows ``batch`` came from; return how many changed."""
        appended_at: dict[uuid.UUID, float] = {}
        for message in batch:
            try:
                row_id = uuid.UUID(header_value(message.headers(), OUTBOX_ROW_ID) or "")
            except ValueError:
                continue  # not from an outbox row (e.g. produced before the header existed)
            appended_at[row_id] = message.timestamp()[1] / 1000
        if len(appended_at) < len(batch):
            _log.info("confirmer.messages_without_row_id", count=len(batch) - len(appended_at))
        if not appended_at:
            return 0
        with work.transaction():
            changed = work.execute(_CONFIRM, (list(appended_at),)).fetchall()
        for row_id, occurred_epoch, replayed in changed:
            # Debezium's record timestamp is when it read the change: the publish moment.
            if not replayed:
                RELAY_PUBLISH_LATENCY.observe(max(0.0, appended_at[row_id] - occurred_epoch))
        RELAY_PUBLISHED.inc(len(changed))
        return len(changed)


def connector_check(settings: Settings) -> Callable[[], None]:
    """Health check: the Debezium connector and its task are RUNNING in Kafka Connect."""
    url = f"{settings.connect_url.rstrip('/')}/connectors/{settings.debezium_connector}/status"

    def check() -> None:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 - our setting
            status = json.load(response)
        states = [status["connector"]["state"], *(t["state"] for t in status.get("tasks", []))]
        if len(states) < 2 or any(state != "RUNNING" for state in states):
            raise RuntimeError(f"connector states {states}")

    return check
