"""``prequal-ops token``: an access token from the development issuer, never in production."""

from __future__ import annotations

from typing import Annotated

import typer

from ops.console import REFUSED
from runtime.dev_issuer import DevelopmentIssuerRefused, issue_token
from runtime.settings import Settings


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
        raise typer.Exit(REFUSED) from refused
