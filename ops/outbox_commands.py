"""``prequal-ops outbox status|replay|purge``: the transactional outbox, for operators.

The work is done in :mod:`ops.status`, :mod:`ops.replay` and :mod:`ops.purge`; this
module parses, asks for confirmation and prints (``--json`` for scripts).
"""

from __future__ import annotations

import getpass
from datetime import datetime
from typing import Annotated

import orjson
import psycopg
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ops.console import (
    UNREACHABLE,
    DryRunFlag,
    JsonFlag,
    YesFlag,
    confirm,
    database,
    print_json,
)
from ops.progress import progress
from ops.purge import DEFAULT_BATCH_SIZE as PURGE_BATCH_SIZE
from ops.purge import PurgePlan, PurgeResult, parse_duration, plan_purge, purge
from ops.replay import DEFAULT_BATCH_SIZE as REPLAY_BATCH_SIZE
from ops.replay import ReplayCriteria, ReplayPlan, ReplayResult, plan_replay, replay
from ops.status import OutboxStatus, outbox_status
from runtime.db import connect
from runtime.settings import Settings
from schema.events import EventType

app = typer.Typer(help="The transactional outbox.", no_args_is_help=True)

#: Original rows a replay's plan shows before the confirmation.
PREVIEW_ROWS = 10

# The options of replay and purge, declared once here so that the signatures stay short.
SinceOption = Annotated[
    str | None,
    typer.Option(help="Replay events that occurred at or after this ISO-8601 time."),
]
UntilOption = Annotated[
    str | None, typer.Option(help="Replay events that occurred before this ISO-8601 time.")
]
FromSeqOption = Annotated[
    int | None, typer.Option("--from-seq", min=1, help="Lowest outbox seq (inclusive).")
]
ToSeqOption = Annotated[
    int | None, typer.Option("--to-seq", min=1, help="Highest outbox seq (inclusive).")
]
AggregateIdOption = Annotated[
    str | None, typer.Option("--aggregate-id", help="Only this aggregate (application id).")
]
EventTypeOption = Annotated[
    EventType | None, typer.Option("--type", help="Only events of this type.")
]
RateOption = Annotated[float | None, typer.Option(help="At most this many events per second.")]
ReplayBatchOption = Annotated[
    int, typer.Option("--batch-size", min=1, help="Rows inserted per transaction.")
]
RequestedByOption = Annotated[
    str | None,
    typer.Option("--requested-by", help="Who asks, for the audit row (default: OS user)."),
]
OlderThanOption = Annotated[
    str,
    typer.Option(
        "--older-than",
        metavar="DURATION",
        help="Delete rows published longer ago than this: 7d, 12h, 30m, 45s.",
    ),
]
PurgeBatchOption = Annotated[
    int, typer.Option("--batch-size", min=1, help="Rows deleted per transaction.")
]


# --- outbox status ------------------------------------------------------------------------


@app.command("status")
def status(as_json: JsonFlag = False) -> None:
    """Pending count, oldest pending age, recent publications, active relay, CDC slot."""
    settings = Settings()
    try:
        with connect(settings, "prequal-ops", autocommit=True) as conn:
            result = outbox_status(conn, settings.debezium_slot)
    except psycopg.OperationalError as error:
        typer.echo(f"database not reachable: {str(error).strip()}", err=True)
        raise typer.Exit(UNREACHABLE) from error
    if as_json:
        typer.echo(orjson.dumps({"relay": settings.relay.value, **result.as_dict()}).decode())
        return
    _print_status(result, settings)


def _print_status(result: OutboxStatus, settings: Settings) -> None:
    table = Table(title="outbox", show_header=False)
    table.add_row("relay setting", settings.relay.value)
    table.add_row("active relay", result.active_relay or "none (no relay holds the lock)")
    table.add_row("pending", str(result.pending))
    age = result.oldest_pending_age_s
    table.add_row("oldest pending age", "-" if age is None else f"{age:.1f} s")
    table.add_row("published in the last minute", str(result.published_last_minute))
    table.add_row("rows kept", str(result.total_rows))
    if result.slot is None:
        table.add_row("CDC slot", f"{settings.debezium_slot}: absent")
    else:
        slot = result.slot
        table.add_row("CDC slot", f"{slot.name}: {'active' if slot.active else 'INACTIVE'}")
        table.add_row("slot retained WAL", f"{slot.retained_wal_bytes:,} bytes")
    Console().print(table)


# --- outbox replay ------------------------------------------------------------------------


@app.command("replay")
def replay_command(
    since: SinceOption = None,
    until: UntilOption = None,
    from_seq: FromSeqOption = None,
    to_seq: ToSeqOption = None,
    aggregate_id: AggregateIdOption = None,
    event_type: EventTypeOption = None,
    rate: RateOption = None,
    batch_size: ReplayBatchOption = REPLAY_BATCH_SIZE,
    requested_by: RequestedByOption = None,
    dry_run: DryRunFlag = False,
    yes: YesFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-emit original outbox events through the outbox; consumers apply what they missed.

    New outbox rows copy the chosen originals (same event id, replay_of = the original
    row); the active relay delivers them. At least one range or filter is required.
    """
    criteria = _replay_criteria(since, until, from_seq, to_seq, aggregate_id, event_type)
    if rate is not None and rate <= 0:
        raise typer.BadParameter("must be positive", param_hint="--rate")
    settings = Settings()
    with database(settings) as conn:
        plan = plan_replay(conn, criteria, show=PREVIEW_ROWS)
        if dry_run or plan.count == 0:
            _print_replay_plan(plan, as_json, dry_run)
            return
        confirm(f"Replay {plan.count} events?", yes)
        with progress("replayed", plan.count, plain=as_json) as update:
            who = requested_by or _os_user()
            result = replay(conn, plan, who, batch_size=batch_size, rate=rate, on_batch=update)
    _print_replayed(plan, result, as_json)


def _replay_criteria(
    since: str | None,
    until: str | None,
    from_seq: int | None,
    to_seq: int | None,
    aggregate_id: str | None,
    event_type: EventType | None,
) -> ReplayCriteria:
    """The options as validated criteria; raises :class:`typer.BadParameter` if refused."""
    criteria = ReplayCriteria(
        since=_timestamp(since, "--since"),
        until=_timestamp(until, "--until"),
        from_seq=from_seq,
        to_seq=to_seq,
        aggregate_id=aggregate_id,
        event_type=None if event_type is None else event_type.value,
    )
    try:
        criteria.validate()
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    return criteria


def _timestamp(text: str | None, option: str) -> datetime | None:
    """``text`` as an aware datetime; raises :class:`typer.BadParameter` without an offset."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise typer.BadParameter(
            f"{text!r} is not an ISO-8601 timestamp", param_hint=option
        ) from error
    if moment.utcoffset() is None:
        raise typer.BadParameter(
            f"{text!r} has no UTC offset (write e.g. 2024-05-01T10:00:00Z or +05:30)",
            param_hint=option,
        )
    return moment


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


def _print_replay_plan(plan: ReplayPlan, as_json: bool, dry_run: bool) -> None:
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                "count": plan.count,
                "up_to_seq": plan.up_to_seq,
                "criteria": plan.criteria.as_json(),
                "first": [row.as_json() for row in plan.first],
                **({} if dry_run else {"replay_id": None, "rows_emitted": 0}),
            }
        )
        return
    if plan.count == 0:
        typer.echo("No original event matches; nothing to replay.")
        return
    typer.echo(f"Would replay {plan.count} events (originals up to seq {plan.up_to_seq}):")
    table = Table("seq", "event_id", "type", "aggregateid", "topic")
    for row in plan.first:
        table.add_row(str(row.seq), str(row.event_id), row.type, Text(row.aggregateid), row.topic)
    Console().print(table)
    if plan.count > len(plan.first):
        typer.echo(f"… and {plan.count - len(plan.first)} more.")


def _print_replayed(plan: ReplayPlan, result: ReplayResult, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "dry_run": False,
                "count": plan.count,
                "replay_id": result.replay_id,
                "rows_emitted": result.rows_emitted,
                "batches": result.batches,
                "criteria": plan.criteria.as_json(),
            }
        )
    else:
        typer.echo(
            f"Replayed {result.rows_emitted} events in {result.batches} batches "
            f"(audit: outbox_replays id {result.replay_id})."
        )


# --- outbox purge -------------------------------------------------------------------------


@app.command("purge")
def purge_command(
    older_than: OlderThanOption,
    batch_size: PurgeBatchOption = PURGE_BATCH_SIZE,
    dry_run: DryRunFlag = False,
    yes: YesFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete published outbox rows older than --older-than, and expired idempotency keys.

    Unpublished rows are never deleted, whatever their age.
    """
    try:
        age = parse_duration(older_than)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--older-than") from error
    settings = Settings()
    with database(settings) as conn:
        plan = plan_purge(conn, age)
        nothing = plan.outbox_rows == 0 and plan.idempotency_keys == 0
        if dry_run or nothing:
            _print_purge_plan(plan, as_json, dry_run)
            return
        confirm(
            f"Delete {plan.outbox_rows} published outbox rows (published before "
            f"{plan.cutoff.isoformat()}) and {plan.idempotency_keys} expired idempotency keys?",
            yes,
        )
        total = plan.outbox_rows + plan.idempotency_keys
        with progress("deleted (outbox rows + keys)", total, plain=as_json) as update:
            result = purge(
                conn, plan, batch_size=batch_size, on_batch=lambda rows, keys: update(rows + keys)
            )
    _print_purged(plan, result, as_json)


def _print_purge_plan(plan: PurgePlan, as_json: bool, dry_run: bool) -> None:
    if as_json:
        print_json({**plan.as_json(), "dry_run": dry_run})
        return
    verb = "Would delete" if dry_run else "Nothing to purge:"
    typer.echo(
        f"{verb} {plan.outbox_rows} published outbox rows (published before "
        f"{plan.cutoff.isoformat()}) and {plan.idempotency_keys} expired idempotency keys."
    )


def _print_purged(plan: PurgePlan, result: PurgeResult, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                **plan.as_json(),
                "dry_run": False,
                "outbox_rows": result.outbox_rows,
                "idempotency_keys": result.idempotency_keys,
                "batches": result.batches,
            }
        )
    else:
        typer.echo(
            f"Deleted {result.outbox_rows} published outbox rows (published before "
            f"{plan.cutoff.isoformat()}) and {result.idempotency_keys} expired idempotency keys."
        )
