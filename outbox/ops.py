"""``prequal-ops``: the operators' command line over the outbox.

Exit codes: 0 done, 1 a server did not answer, 2 bad arguments (typer's own).
"""

from __future__ import annotations

from typing import Annotated

import orjson
import psycopg
import typer
from confluent_kafka import KafkaException
from rich.console import Console
from rich.table import Table

from outbox.status import outbox_status
from runtime.db import connect
from runtime.kafka import all_topics, ensure_topics
from runtime.settings import Settings

app = typer.Typer(help="Operate prequal: the outbox and its relays.", no_args_is_help=True)
outbox_app = typer.Typer(help="The transactional outbox.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
_UNREACHABLE = 1


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
    """Create prequal's topics that do not exist yet (partitions and retention from settings)."""
    settings = Settings()
    try:
        ensure_topics(settings)
    except KafkaException as error:
        typer.echo(f"Kafka not reachable: {error}", err=True)
        raise typer.Exit(_UNREACHABLE) from error
    typer.echo(", ".join(all_topics(settings)))


def main() -> None:
    """Console script entry point."""
    app()
