"""What the fault drills read back from outside the system, shared by every drill file."""

from __future__ import annotations

import json
import time

from bench.loadgen import percentile
from messaging.headers import EVENT_ID, EVENT_TYPE
from runtime.settings import Settings
from schema.events import EventType
from tests.support.kafka import Received, consume


def events_per_application(
    settings: Settings,
    topic: str,
    event_type: EventType,
    expected: set[str],
    settle_s: float,
    timeout_s: float,
) -> dict[str, list[str]]:
    """The event ids of each application's ``event_type`` events a read_committed reader sees.

    Reads from the beginning until every id in ``expected`` was seen, and ``settle_s``
    seconds more so that a duplicate committed right behind the first copy is counted too
    (``timeout_s`` at most).
    """
    events: dict[str, list[str]] = {}
    read = 0
    complete_at: list[float] = []

    def until(messages: list[Received]) -> bool:
        nonlocal read
        for message in messages[read:]:
            # Transaction fences (no value) and other types are not events of this kind.
            if message.value and message.headers.get(EVENT_TYPE) == event_type.value:
                aggregate = str(json.loads(message.value)["aggregate_id"])
                events.setdefault(aggregate, []).append(message.headers.get(EVENT_ID, ""))
        read = len(messages)
        if not complete_at and expected <= events.keys():
            complete_at.append(time.monotonic())
        return bool(complete_at) and time.monotonic() - complete_at[0] > settle_s

    consume(settings, topic, until=until, timeout_s=timeout_s, isolation="read_committed")
    return events


def credit_report_violations(
    reports: dict[str, list[str]], submitted: dict[str, list[str]], accepted: set[str]
) -> list[str]:
    """What breaks exactly-once credit reports for a ``read_committed`` reader.

    ``reports`` and ``submitted``: each application's credit report and submitted event
    ids as read back (:func:`events_per_application`). The relay publishes at least once
    (a batch whose delivery timed out locally may have reached the broker all the same),
    and the credit worker, which has no inbox, reports each submitted event it reads
    once: so a report read as often as its submitted event was published is exactly
    once per input. One read more often, or two different report ids for one
    application, is a transaction the credit worker committed twice.
    """
    violations: list[str] = []
    if missing := accepted - reports.keys():
        violations.append(f"{len(missing)} accepted applications without a credit report")
    if two_ids := {app: ids for app, ids in reports.items() if len(set(ids)) > 1}:
        violations.append(f"{len(two_ids)} applications with two different report event ids")
    excess = {
        app: (len(ids), len(submitted.get(app, [])))
        for app, ids in reports.items()
        if len(ids) > len(submitted.get(app, []))
    }
    if excess:
        violations.append(
            f"{len(excess)} credit reports committed more often than their submitted event"
            f" was published (reports, submitted): {list(excess.items())[:5]}"
        )
    return violations


def relay_redeliveries(submitted: dict[str, list[str]]) -> int:
    """Submitted events read more than once: the relay's at-least-once copies."""
    return sum(len(ids) - 1 for ids in submitted.values() if len(ids) > 1)


def ms(values: list[float], q: float) -> str:
    """The ``q``-th percentile of ``values`` (seconds) in milliseconds, or "-" for none."""
    return f"{percentile(values, q) * 1000:.0f} ms" if values else "-"
