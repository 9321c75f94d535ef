"""What every ``prequal-ops`` command shares: exit codes, flags, the prompt, JSON, the database.

Exit codes: 0 done, 1 a server did not answer (or did not acknowledge), 2 bad arguments
(typer's own, and every refusal of what was asked), 3 declined at the confirmation
prompt (nothing was done; ``--yes`` skips the prompt).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import orjson
import psycopg
import typer

from runtime.db import connect
from runtime.settings import Settings

#: Exit code: a server did not answer, or did not acknowledge.
UNREACHABLE = 1
#: Exit code: what was asked is refused (typer uses 2 for bad arguments too).
REFUSED = 2
#: Exit code: declined at the confirmation prompt; nothing was done.
DECLINED = 3

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
YesFlag = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunFlag = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be done; change and send nothing.")
]


def print_json(body: Any) -> None:
    """Print ``body`` (anything orjson serialises) as one line of JSON on stdout."""
    typer.echo(orjson.dumps(body).decode())


def confirm(question: str, yes: bool) -> None:
    """Ask ``question [y/N]`` unless ``--yes``; exit 3 unless the answer is yes.

    The question goes to stderr and the answer is read from stdin, so that stdout
    carries only the result (``--json`` stays parseable). End of input is a no.
    Raises :class:`typer.Exit` (code 3) on any other answer.
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
        raise typer.Exit(DECLINED)


@contextmanager
def database(settings: Settings) -> Iterator[psycopg.Connection]:
    """An autocommit connection for an operator command; exit 1 if the database is down.

    Operator commands scan and delete in bulk: statements may run 5 minutes, not the
    services' 5 s. Raises :class:`typer.Exit` (code 1) on
    :class:`psycopg.OperationalError`, whether connecting or later.
    """
    try:
        with connect(settings, "prequal-ops", autocommit=True) as conn:
            conn.execute("SET statement_timeout = '5min'")
            yield conn
    except psycopg.OperationalError as error:
        typer.echo(f"database not reachable: {str(error).strip()}", err=True)
        raise typer.Exit(UNREACHABLE) from error
