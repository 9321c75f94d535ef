"""``prequal-ops dlq list|show|redrive``: the dead-letter topic, for operators.

The work is done in :mod:`ops.dlq`; this module parses, asks for confirmation and
prints (``--json`` for scripts; prompts go to stderr).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated

import typer
from confluent_kafka import KafkaException

from ops.console import (
    UNREACHABLE,
    DryRunFlag,
    JsonFlag,
    YesFlag,
    confirm,
    print_json,
)
from ops.dlq import (
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
from ops.progress import progress
from runtime.settings import Settings

app = typer.Typer(help="The dead-letter topic.", no_args_is_help=True)

# The options of list and redrive, declared once here so that the signatures stay short.
LimitOption = Annotated[int, typer.Option(min=1, help="Show at most this many (oldest first).")]
ListConsumerOption = Annotated[
    str | None, typer.Option(help="Only those this consumer gave up on.")
]
ListSourceTopicOption = Annotated[
    str | None, typer.Option("--source-topic", help="Only those consumed from this topic.")
]
OffsetOption = Annotated[
    int | None, typer.Option(min=0, help="Redrive the dead letter at this offset.")
]
PartitionOption = Annotated[int | None, typer.Option(min=0, help="With --offset: its partition.")]
ConsumerOption = Annotated[
    str | None, typer.Option(help="Redrive every dead letter this consumer gave up on.")
]
SourceTopicOption = Annotated[
    str | None,
    typer.Option("--source-topic", help="Redrive every dead letter from this topic."),
]
AllOption = Annotated[bool, typer.Option("--all", help="Redrive every dead letter.")]


@contextmanager
def kafka_errors() -> Iterator[None]:
    """Exit 1 with a clear message when Kafka does not answer or acknowledge.

    librdkafka's own log (a line per failed connection attempt) is silenced: the one
    message printed here says what failed. Raises :class:`typer.Exit` (code 1) on
    :class:`KafkaException`, :class:`DeadLetterReadTimeout` and :class:`RedriveFailed`.
    """
    logging.getLogger("librdkafka").setLevel(logging.CRITICAL)
    try:
        yield
    except (KafkaException, DeadLetterReadTimeout, RedriveFailed) as error:
        typer.echo(f"Kafka not reachable: {error}", err=True)
        raise typer.Exit(UNREACHABLE) from error


# --- dlq list -----------------------------------------------------------------------------


@app.command("list")
def dlq_list(
    limit: LimitOption = 50,
    consumer: ListConsumerOption = None,
    source_topic: ListSourceTopicOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The dead letters now on the dead-letter topic: where from, who gave up, and why."""
    settings = Settings()
    with kafka_errors(), progress("read", None, plain=as_json) as update:
        every = read_dead_letters(settings, on_read=update)
    letters = select(every, consumer=consumer, source_topic=source_topic)
    shown = letters[:limit]
    if as_json:
        print_json(
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


# --- dlq show -----------------------------------------------------------------------------


@app.command("show")
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
    with kafka_errors():
        letter = _one_letter(settings, offset, partition)
    if as_json:
        print_json(
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


def _one_letter(settings: Settings, offset: int, partition: int | None) -> DeadLetter:
    """The one dead letter at ``offset``; raises :class:`typer.BadParameter` if not one."""
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


# --- dlq redrive --------------------------------------------------------------------------


@app.command("redrive")
def dlq_redrive(
    offset: OffsetOption = None,
    partition: PartitionOption = None,
    consumer: ConsumerOption = None,
    source_topic: SourceTopicOption = None,
    redrive_all: AllOption = False,
    dry_run: DryRunFlag = False,
    yes: YesFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Send dead letters back to the topic they were consumed from, headers restored.

    Choose exactly one of: --offset (with --partition if ambiguous), --consumer and/or
    --source-topic, or --all. A dead letter stays on the DLQ; redriving it again is
    harmless (the consumers' inboxes skip what they already applied).
    """
    by_filter = consumer is not None or source_topic is not None
    if sum([offset is not None, by_filter, redrive_all]) != 1:
        raise typer.BadParameter(
            "choose exactly one of --offset, --consumer/--source-topic or --all"
        )
    if partition is not None and offset is None:
        raise typer.BadParameter("only goes with --offset", param_hint="--partition")
    settings = Settings()
    with kafka_errors():
        letters = _letters_to_redrive(settings, offset, partition, consumer, source_topic, as_json)
        chosen, unknown = redrivable(letters)
        for letter in unknown:
            typer.echo(f"skipped {letter.position}: no source topic recorded", err=True)
        if dry_run or not chosen:
            _print_redrive_plan(chosen, settings.topic_dlq, as_json, dry_run)
            return
        confirm(f"Redrive {len(chosen)} dead letters?", yes)
        done = _redrive(settings, chosen, as_json)
    _print_redriven(done, as_json)


def _letters_to_redrive(
    settings: Settings,
    offset: int | None,
    partition: int | None,
    consumer: str | None,
    source_topic: str | None,
    as_json: bool,
) -> list[DeadLetter]:
    """The one at ``offset``, or every dead letter matching ``consumer``/``source_topic``."""
    if offset is not None:
        return [_one_letter(settings, offset, partition)]
    with progress("read", None, plain=as_json) as update:
        every = read_dead_letters(settings, on_read=update)
    return select(every, consumer=consumer, source_topic=source_topic)


def _redrive(settings: Settings, chosen: Sequence[DeadLetter], as_json: bool) -> list[Redriven]:
    """Redrive ``chosen`` with a progress bar; exit 1 when a source topic is missing."""
    try:
        with progress("redriven", len(chosen), plain=as_json) as update:
            return redrive(settings, chosen, on_delivered=update)
    except MissingSourceTopic as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(UNREACHABLE) from error


def _print_redrive_plan(
    letters: Sequence[DeadLetter], topic: str, as_json: bool, dry_run: bool
) -> None:
    if as_json:
        print_json(
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
        print_json({"dry_run": False, "count": len(done), "redriven": [r.as_json() for r in done]})
        return
    for item in done:
        info = item.as_json()
        typer.echo(
            f"redrove {info['from']} (event {info['event_id']}) to "
            f"{item.topic}[{item.partition}]@{item.offset}"
        )
    typer.echo(f"Redrove {len(done)} dead letters.")
