"""``prequal-ops cdc reset-slot``: the Debezium relay's position (Kafka Connect and the slot).

The work is done in :mod:`ops.connect_admin`; this module asks for confirmation and
prints (``--json`` for scripts; the hand-over's log goes to stderr).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated

import structlog
import typer
from confluent_kafka import KafkaException

from ops.connect_admin import (
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
from ops.console import (
    REFUSED,
    UNREACHABLE,
    DryRunFlag,
    JsonFlag,
    YesFlag,
    confirm,
    database,
    print_json,
)
from outbox.relay import DeliveryFailed
from runtime.settings import Settings

app = typer.Typer(help="The Debezium relay (Kafka Connect).", no_args_is_help=True)


@app.command("reset-slot")
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
        with database(settings) as conn, _connect_errors():
            slot = check_slot_database(conn, settings.debezium_slot)
            state = admin.state()
            if dry_run:
                _print_reset_plan(admin, state, slot, as_json)
                return
            confirm(
                f"Stop connector {admin.connector} ({state}) on {admin.url}, drop slot"
                f" {settings.debezium_slot} and reset the connector's offsets?",
                yes,
            )
            step = (lambda line: None) if as_json else typer.echo
            report = reset_slot(settings, admin, conn, timeout_s=timeout, on_step=step)
    finally:
        admin.close()
    if as_json:
        print_json({"dry_run": False, **report.as_json()})


@contextmanager
def _connect_errors() -> Iterator[None]:
    """Exit 2 for a refusal (no such connector, another database's slot), 1 otherwise."""
    try:
        yield
    except (ConnectorMissing, SlotError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(REFUSED) from error
    except (ConnectError, SlotBusy) as error:
        typer.echo(f"Kafka Connect: {error}", err=True)
        raise typer.Exit(UNREACHABLE) from error
    except (KafkaException, DeliveryFailed) as error:
        typer.echo(
            f"Kafka not reachable: {error}; the connector runs again, its hand-over is"
            " unfinished: restart outbox-relay to finish it",
            err=True,
        )
        raise typer.Exit(UNREACHABLE) from error


def _print_reset_plan(
    admin: ConnectAdmin, state: ConnectorState, slot: SlotState | None, as_json: bool
) -> None:
    if as_json:
        print_json(
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
