"""``prequal-ops``: the operators' command line over the outbox and the dead-letter topic.

The root of the command tree; each group is a module of its own:

- ``outbox status|replay|purge`` — :mod:`ops.outbox_commands`;
- ``topics create`` — :mod:`ops.topics_commands`;
- ``dlq list|show|redrive`` — :mod:`ops.dlq_commands`;
- ``token`` — :mod:`ops.token_command`;
- ``cdc reset-slot`` — :mod:`ops.cdc_commands`.

They parse, ask for confirmation and print (``--json`` for scripts; prompts go to
stderr); the work is done in :mod:`ops.status`, :mod:`ops.replay`, :mod:`ops.purge`,
:mod:`ops.dlq` and :mod:`ops.connect_admin`. Exit codes are :mod:`ops.console`'s:
0 done, 1 a server did not answer, 2 bad arguments or a refusal, 3 declined.
"""

from __future__ import annotations

import typer

from ops import cdc_commands, dlq_commands, outbox_commands, topics_commands
from ops.token_command import token_command

app = typer.Typer(
    help="Operate prequal: the outbox, its relays and the dead-letter topic.", no_args_is_help=True
)
app.add_typer(outbox_commands.app, name="outbox")
app.add_typer(topics_commands.app, name="topics")
app.add_typer(dlq_commands.app, name="dlq")
app.add_typer(cdc_commands.app, name="cdc")
app.command("token")(token_command)


def main() -> None:
    """Console script entry point: run ``prequal-ops`` on ``sys.argv``; exits with its code."""
    app()
