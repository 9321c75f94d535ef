"""``prequal-ops``: the operators' command line over the outbox and the dead-letter topic.

``outbox status``, ``outbox replay``, ``outbox purge``, ``dlq list``, ``dlq show``,
``dlq redrive``, ``topics create`` and ``cdc reset-slot``. The work is done in
:mod:`outbox.status`, :mod:`outbox.replay`, :mod:`outbox.purge`, :mod:`outbox.dlq` and
:mod:`outbox.connect_admin`; this module parses, asks for confirmation and prints
(``--json`` for scripts; prompts go to stderr).

Exit codes: 0 done, 1 a server did not answer (or did not acknowledge), 2 bad arguments
(typer's own, and every refusal of what was asked), 3 declined at the confirmation
prompt (nothing was done; ``--yes`` skips the prompt).
"""

from __future__ import annotations

import getpass
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import orjson
import psycopg
import structlog
import typer
from confluent_kafka import KafkaException
from rich.console import Console
from rich.table import Table
from rich.text import Text

from outbox.connect_admin import (
    ConnectAdmin,
    ConnectError,
    ConnectorMissing,
    ConnectorState,
    SlotBusy,
    SlotError,
    SlotState,
    check_slot_database,
    reset_slot,
)
from outbox.dlq import (
    DeadLetter,
    DeadLetterReadTimeout,
    MissingSourceTopic,
    RedriveFailed,
    Redriven,
    UnknownPartition,
    find_dead_letters,
    read_dead_letters,
    redrivable,
    redrive,
    select,
)
from outbox.progress import progress
from outbox.purge import DEFAULT_BATCH_SIZE as PURGE_BATCH_SIZE
from outbox.purge import PurgePlan, parse_duration, plan_purge, purge
from outbox.relay import DeliveryFailed
from outbox.replay import DEFAULT_BATCH_SIZE as REPLAY_BATCH_SIZE
from outbox.replay import ReplayCriteria, ReplayPlan, plan_replay, replay
from outbox.status import outbox_status
from runtime.db import connect
from runtime.dev_issuer import DevelopmentIssuerRefused, issue_token
from runtime.kafka import all_topics, ensure_topics
from runtime.settings import Settings
from schema.events import EventType

app = typer.Typer(
    help="Operate prequal: the outbox, its relays and the dead-letter topic.", no_args_is_help=True
)
outbox_app = typer.Typer(help="The transactional outbox.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
dlq_app = typer.Typer(help="The dead-letter topic.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
cdc_app = typer.Typer(help="The Debezium relay (Kafka Connect).", no_args_is_help=True)
app.add_typer(cdc_app, name="cdc")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
YesFlag = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunFlag = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be done; change and send nothing.")
]
_UNREACHABLE = 1
_DECLINED = 3
_PREVIEW_ROWS = 10


@outbox_app.command("status")
def status(as_json: JsonFlag = False) -> None:
    """Pending count, oldest pending age, recent publications, active relay, CDC slot."""
    settings = Settings()
    try:
        with connect(settings, "prequal-ops", autocommit=True) as conn:
            result = outbox_status(conn, settings.debezium_slot)
    except psycopg.OperationalError as error:
        typer.echo(f"database not reachable: {str(error).strip()}", err=True)
        raise typer.Exit(_UNREACHABLE) from error
    if as_json:
        typer.echo(orjson.dumps({"relay": settings.relay.value, **result.as_dict()}).decode())
        return
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


@topics_app.command("create")
def create_topics() -> None:
    """Create prequal's topics that do not exist yet.

    Partitions, replicas and retention from settings: one replica on the single local
    broker, three with min.insync.replicas=2 on the cluster (PREQUAL_KAFKA_BROKERS=3).
    """
    settings = Settings()
    try:
        ensure_topics(settings)
    except KafkaException as error:
        typer.echo(f"Kafka not reachable: {error}", err=True)
        raise typer.Exit(_UNREACHABLE) from error
    typer.echo(", ".join(all_topics(settings)))


# --- shared helpers ---------------------------------------------------------------------


def _print_json(body: Any) -> None:
    typer.echo(orjson.dumps(body).decode())


def _confirm(question: str, yes: bool) -> None:
    """Ask ``question [y/N]`` unless ``--yes``; exit 3 unless the answer is yes.

    The question goes to stderr and the answer is read from stdin, so that stdout
    carries only the result (``--json`` stays parseable). End of input is a no.
    """
    if yes:
        return
    typer.echo(f"{question} [y/N] ", nl=False, err=True)
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        typer.echo("" if answer.endswith("\n") else "\n", nl=False, err=True)
        typer.echo("Nothing done.", err=True)
        raise typer.Exit(_DECLINED)


@contextmanager
def _database(settings: Settings) -> Iterator[psycopg.Connection]:
    """An autocommit connection for an operator command; exit 1 if the database is down.

    Operator commands scan and delete in bulk: statements may run 5 minutes, not the
    services' 5 s.
    """
    try:
        with connect(settings, "prequal-ops", autocommit=True) as conn:
            conn.execute("SET statement_timeout = '5min'")
            yield conn
    except psycopg.OperationalError as error:
        typer.echo(f"database not reachable: {str(error).strip()}", err=True)
        raise typer.Exit(_UNREACHABLE) from error


@contextmanager
def _kafka() -> Iterator[None]:
    """Exit 1 with a clear message when Kafka does not answer or acknowledge.

    librdkafka's own log (a line per failed connection attempt) is silenced: the one
    message printed here says what failed.
    """
    logging.getLogger("librdkafka").setLevel(logging.CRITICAL)
    try:
        yield
    except (KafkaException, DeadLetterReadTimeout, RedriveFailed) as error:
        typer.echo(f"Kafka not reachable: {error}", err=True)
        raise typer.Exit(_UNREACHABLE) from error


# --- outbox replay ------------------------------------------------------------------------


def _timestamp(text: str | None, option: str) -> datetime | None:
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


@outbox_app.command("replay")
def replay_command(
    since: Annotated[
        str | None,
        typer.Option(help="Replay events that occurred at or after this ISO-8601 time."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Replay events that occurred before this ISO-8601 time.")
    ] = None,
    from_seq: Annotated[
        int | None, typer.Option("--from-seq", min=1, help="Lowest outbox seq (inclusive).")
    ] = None,
    to_seq: Annotated[
        int | None, typer.Option("--to-seq", min=1, help="Highest outbox seq (inclusive).")
    ] = None,
    aggregate_id: Annotated[
        str | None, typer.Option("--aggregate-id", help="Only this aggregate (application id).")
    ] = None,
    event_type: Annotated[
        EventType | None, typer.Option("--type", help="Only events of this type.")
    ] = None,
    rate: Annotated[float | None, typer.Option(help="At most this many events per second.")] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows inserted per transaction.")
    ] = REPLAY_BATCH_SIZE,
    requested_by: Annotated[
        str | None,
        typer.Option("--requested-by", help="Who asks, for the audit row (default: OS user)."),
    ] = None,
    dry_run: DryRunFlag = False,
    yes: YesFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-emit original outbox events through the outbox; consumers apply what they missed.

    New outbox rows copy the chosen originals (same event id, replay_of = the original
    row); the active relay delivers them. At least one range or filter is required.
    """
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
    if rate is not None and rate <= 0:
        raise typer.BadParameter("must be positive", param_hint="--rate")
    settings = Settings()
    with _database(settings) as conn:
        plan = plan_replay(conn, criteria, show=_PREVIEW_ROWS)
        if dry_run or plan.count == 0:
            _print_replay_plan(plan, as_json, dry_run)
            return
        _confirm(f"Replay {plan.count} events?", yes)
        with progress("replayed", plan.count, plain=as_json) as update:
            result = replay(
                conn,
                plan,
                requested_by or _os_user(),
                batch_size=batch_size,
                rate=rate,
                on_batch=update,
            )
    if as_json:
        _print_json(
            {
                "dry_run": False,
                "count": plan.count,
                "replay_id": result.replay_id,
                "rows_emitted": result.rows_emitted,
                "batches": result.batches,
                "criteria": criteria.as_json(),
            }
        )
    else:
        typer.echo(
            f"Replayed {result.rows_emitted} events in {result.batches} batches "
            f"(audit: outbox_replays id {result.replay_id})."
        )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


def _print_replay_plan(plan: ReplayPlan, as_json: bool, dry_run: bool) -> None:
    if as_json:
        _print_json(
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


# --- outbox purge -------------------------------------------------------------------------


@outbox_app.command("purge")
def purge_command(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Delete rows published longer ago than this: 7d, 12h, 30m, 45s.",
        ),
    ],
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows deleted per transaction.")
    ] = PURGE_BATCH_SIZE,
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
    with _database(settings) as conn:
        plan = plan_purge(conn, age)
        nothing = plan.outbox_rows == 0 and plan.idempotency_keys == 0
        if dry_run or nothing:
            _print_purge_plan(plan, as_json, dry_run)
            return
        _confirm(
            f"Delete {plan.outbox_rows} published outbox rows (published before "
            f"{plan.cutoff.isoformat()}) and {plan.idempotency_keys} expired idempotency keys?",
            yes,
        )
        total = plan.outbox_rows + plan.idempotency_keys
        with progress("deleted (outbox rows + keys)", total, plain=as_json) as update:
            result = purge(
                conn,
                plan,
                batch_size=batch_size,
                on_batch=lambda rows, keys: update(rows + keys),
            )
    if as_json:
        _print_json(
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


def _print_purge_plan(plan: PurgePlan, as_json: bool, dry_run: bool) -> None:
    if as_json:
        _print_json({**plan.as_json(), "dry_run": dry_run})
        return
    verb = "Would delete" if dry_run else "Nothing to purge:"
    typer.echo(
        f"{verb} {plan.outbox_rows} published outbox rows (published before "
        f"{plan.cutoff.isoformat()}) and {plan.idempotency_keys} expired idempotency keys."
    )


# --- dlq ----------------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many (oldest first).")] = 50,
    consumer: Annotated[
        str | None, typer.Option(help="Only those this consumer gave up on.")
    ] = None,
    source_topic: Annotated[
        str | None, typer.Option("--source-topic", help="Only those consumed from this topic.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """The dead letters now on the dead-letter topic: where from, who gave up, and why."""
    settings = Settings()
    with _kafka(), progress("read", None, plain=as_json) as update:
        every = read_dead_letters(settings, on_read=update)
    letters = select(every, consumer=consumer, source_topic=source_topic)
    shown = letters[:limit]
    if as_json:
        _print_json(
            {
                "topic": settings.topic_dlq,
                "total": len(letters),
                "dead_letters": [letter.as_json() for letter in shown],
            }
        )
        return
    if not letters:
        filtered = consumer is not None or source_topic is not None
        suffix = " match the filter" if filtered else ""
        typer.echo(f"No dead letters on {settings.topic_dlq}{suffix}.")
        return
    typer.echo(f"dead letters on {settings.topic_dlq} (partition:offset, failed at, consumer,")
    typer.echo("source topic[partition]@offset, event type, event id):")
    _print_letters(shown)
    typer.echo(
        f"{len(letters)} dead letters" + (f", first {limit} shown" if len(letters) > limit else "")
    )


def _print_letters(letters: Sequence[DeadLetter]) -> None:
    """Two plain lines per dead letter: readable at any terminal width, and greppable."""
    for letter in letters:
        info = letter.as_json()
        source = f"{info['source_topic']}[{info['source_partition']}]@{info['source_offset']}"
        typer.echo(
            f"{letter.position}  {info['failed_at'] or '-'}  {info['consumer'] or '-'}  "
            f"{source}  {info['event_type'] or '-'}  {info['event_id'] or '-'}"
        )
        typer.echo(f"    reason: {info['reason'] or '-'}")


def _one_letter(settings: Settings, offset: int, partition: int | None) -> DeadLetter:
    try:
        found = find_dead_letters(settings, offset, partition)
    except UnknownPartition as error:
        raise typer.BadParameter(str(error), param_hint="--partition") from error
    where = f"partition {partition}" if partition is not None else "any partition"
    if not found:
        raise typer.BadParameter(
            f"no dead letter at offset {offset} in {where}", param_hint="OFFSET"
        )
    if len(found) > 1:
        partitions = ", ".join(str(letter.partition) for letter in found)
        raise typer.BadParameter(
            f"offset {offset} exists in partitions {partitions}: choose one with --partition",
            param_hint="OFFSET",
        )
    return found[0]


@dlq_app.command("show")
def dlq_show(
    offset: Annotated[int, typer.Argument(min=0, help="The dead letter's offset on the DLQ.")],
    partition: Annotated[
        int | None,
        typer.Option(min=0, help="Its partition (needed when several have that offset)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """One dead letter in full: every header, the key and the value (PANs masked)."""
    settings = Settings()
    with _kafka():
        letter = _one_letter(settings, offset, partition)
    if as_json:
        _print_json(
            {
                **letter.as_json(),
                "headers": dict(letter.headers_text()),
                "value": letter.value_text(),
            }
        )
        return
    # Plain lines, not a table: nothing wraps, and grep finds any header.
    typer.echo(f"dead letter {letter.position} on {settings.topic_dlq}")
    typer.echo(f"key: {letter.as_json()['key']}")
    typer.echo(f"timestamp_ms: {letter.timestamp_ms}")
    typer.echo("headers:")
    for name, value in letter.headers_text():
        typer.echo(f"  {name}: {'(null)' if value is None else value}")
    typer.echo("value:")
    typer.echo(letter.value_text() or "(null)")


@dlq_app.command("redrive")
def dlq_redrive(
    offset: Annotated[
        int | None, typer.Option(min=0, help="Redrive the dead letter at this offset.")
    ] = None,
    partition: Annotated[
        int | None, typer.Option(min=0, help="With --offset: its partition.")
    ] = None,
    consumer: Annotated[
        str | None, typer.Option(help="Redrive every dead letter this consumer gave up on.")
    ] = None,
    source_topic: Annotated[
        str | None,
        typer.Option("--source-topic", help="Redrive every dead letter from this topic."),
    ] = None,
    redrive_all: Annotated[bool, typer.Option("--all", help="Redrive every dead letter.")] = False,
    dry_run: DryRunFlag = False,
    yes: YesFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Send dead letters back to the topic they were consumed from, headers restored.

    Choose exactly one of: --offset (with --partition if ambiguous), --consumer and/or
    --source-topic, or --all. A dead letter stays on the DLQ; redriving it again is
    harmless (the consumers' inboxes skip what they already applied).
    """
    modes = [offset is not None, consumer is not None or source_topic is not None, redrive_all]
    if sum(modes) != 1:
        raise typer.BadParameter(
            "choose exactly one of --offset, --consumer/--source-topic or --all"
        )
    if partition is not None and offset is None:
        raise typer.BadParameter("only goes with --offset", param_hint="--partition")
    settings = Settings()
    with _kafka():
        if offset is not None:
            letters = [_one_letter(settings, offset, partition)]
        else:
            with progress("read", None, plain=as_json) as update:
                every = read_dead_letters(settings, on_read=update)
            letters = select(every, consumer=consumer, source_topic=source_topic)
        chosen, unknown = redrivable(letters)
        for letter in unknown:
            typer.echo(f"skipped {letter.position}: no source topic recorded", err=True)
        if dry_run or not chosen:
            _print_redrive_plan(chosen, settings.topic_dlq, as_json, dry_run)
            return
        _confirm(f"Redrive {len(chosen)} dead letters?", yes)
        try:
            with progress("redriven", len(chosen), plain=as_json) as update:
                done = redrive(settings, chosen, on_delivered=update)
        except MissingSourceTopic as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(_UNREACHABLE) from error
    _print_redriven(done, as_json)


def _print_redrive_plan(
    letters: Sequence[DeadLetter], topic: str, as_json: bool, dry_run: bool
) -> None:
    if as_json:
        _print_json(
            {
                "dry_run": dry_run,
                "count": len(letters),
                "dead_letters": [letter.as_json() for letter in letters],
                **({} if dry_run else {"redriven": []}),
            }
        )
        return
    if not letters:
        typer.echo("No dead letter selected; nothing to redrive.")
        return
    typer.echo(f"Would redrive {len(letters)} dead letters from {topic}:")
    _print_letters(letters)


def _print_redriven(done: Sequence[Redriven], as_json: bool) -> None:
    if as_json:
        _print_json({"dry_run": False, "count": len(done), "redriven": [r.as_json() for r in done]})
        return
    for item in done:
        info = item.as_json()
        typer.echo(
            f"redrove {info['from']} (event {info['event_id']}) to "
            f"{item.topic}[{item.partition}]@{item.offset}"
        )
    typer.echo(f"Redrove {len(done)} dead letters.")


@app.command("token")
def token_command(
    client: Annotated[str, typer.Option(help="The client id (azp and sub of the token).")],
    scope: Annotated[
        list[str],
        typer.Option(help="A scope to grant; repeat it (applications:write, applications:read)."),
    ],
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.", min=1)] = 3600,
) -> None:
    """Print an access token from the development issuer (never in production).

    For ``make run`` and the README's walkthrough: ``curl -H "Authorization: Bearer
    $(prequal-ops token --client demo --scope applications:write)"``.
    """
    settings = Settings()
    try:
        typer.echo(issue_token(settings, client, scope, ttl))
    except DevelopmentIssuerRefused as refused:
        typer.echo(f"refused: {refused}; tokens come from your identity provider", err=True)
        raise typer.Exit(2) from refused


# --- cdc -----------------------------------------------------------------------------------


@cdc_app.command("reset-slot")
def cdc_reset_slot(
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for each state change.")
    ] = 60.0,
    dry_run: DryRunFlag = False,
    yes: YesFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Reset the CDC position: stop the connector, drop the slot, reset its offsets, resume.

    Connect's offsets and the replication slot are one piece of state; run this whenever
    they may disagree (a recreated database, a slot dropped by hand, offsets restored
    from elsewhere) or to free a slot's WAL. Works on a distributed Connect cluster (offsets
    in a topic) and on a standalone worker (PREQUAL_CONNECT_URL). Afterwards the rows
    committed while no slot streamed are published once more (the hand-over).
    """
    # The hand-over logs as the relay does; stdout is for the result (--json).
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    settings = Settings()
    admin = ConnectAdmin(settings.connect_url, settings.debezium_connector)
    try:
        with _database(settings) as conn, _connect_errors():
            slot = check_slot_database(conn, settings.debezium_slot)
            state = admin.state()
            if dry_run:
                _print_reset_plan(admin, state, slot, as_json)
                return
            _confirm(
                f"Stop connector {admin.connector} ({state}) on {admin.url}, drop slot"
                f" {settings.debezium_slot} and reset the connector's offsets?",
                yes,
            )
            step = (lambda line: None) if as_json else typer.echo
            report = reset_slot(settings, admin, conn, timeout_s=timeout, on_step=step)
    finally:
        admin.close()
    if as_json:
        _print_json({"dry_run": False, **report.as_json()})


@contextmanager
def _connect_errors() -> Iterator[None]:
    """Exit 2 for a refusal (no such connector, another database's slot), 1 otherwise."""
    try:
        yield
    except (ConnectorMissing, SlotError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from error
    except (ConnectError, SlotBusy) as error:
        typer.echo(f"Kafka Connect: {error}", err=True)
        raise typer.Exit(_UNREACHABLE) from error
    except (KafkaException, DeliveryFailed) as error:
        typer.echo(
            f"Kafka not reachable: {error}; the connector runs again, its hand-over is"
            " unfinished: restart outbox-relay to finish it",
            err=True,
        )
        raise typer.Exit(_UNREACHABLE) from error


def _print_reset_plan(
    admin: ConnectAdmin, state: ConnectorState, slot: SlotState | None, as_json: bool
) -> None:
    if as_json:
        _print_json(
            {
                "dry_run": True,
                "connector": admin.connector,
                "state": str(state),
                "slot": None if slot is None else asdict(slot),
            }
        )
        return
    typer.echo(f"Would stop connector {admin.connector} on {admin.url} (now: {state}),")
    if slot is None:
        typer.echo("find no slot to drop,")
    else:
        active = "active" if slot.active else "INACTIVE"
        typer.echo(
            f"drop slot {slot.name} ({active}, retains {slot.retained_wal_bytes:,} bytes of WAL),"
        )
    typer.echo("reset the connector's offsets, resume it, and hand over (publish the rows")
    typer.echo("committed while no slot streamed).")


def main() -> None:
    """Console script entry point."""
    app()
