"""Run the Alembic migrations programmatically (``prequal-migrate``, tests, ``make migrate``)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from runtime.settings import Settings

_ROOT = Path(__file__).resolve().parent


def alembic_config(sqlalchemy_url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(_ROOT / "migrations"))
    config.attributes["sqlalchemy_url"] = sqlalchemy_url
    return config


def upgrade(sqlalchemy_url: str, revision: str = "head") -> None:
    """Migrate the database up to ``revision``."""
    command.upgrade(alembic_config(sqlalchemy_url), revision)


def downgrade(sqlalchemy_url: str, revision: str = "base") -> None:
    """Migrate the database down to ``revision``."""
    command.downgrade(alembic_config(sqlalchemy_url), revision)


def main() -> None:
    """Console script: ``prequal-migrate [upgrade|downgrade] [REVISION]``."""
    args = sys.argv[1:]
    action = args[0] if args else "upgrade"
    settings = Settings()
    if action == "upgrade":
        upgrade(settings.sqlalchemy_url, args[1] if len(args) > 1 else "head")
    elif action == "downgrade":
        downgrade(settings.sqlalchemy_url, args[1] if len(args) > 1 else "base")
    else:
        sys.exit(f"usage: prequal-migrate [upgrade|downgrade] [REVISION] (got {action!r})")
