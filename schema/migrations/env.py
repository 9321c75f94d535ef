"""Alembic environment: migrate the database named by prequal's Settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from runtime.settings import Settings
from schema.tables import metadata

config = context.config


def _url() -> str:
    # A caller (tests, prequal-migrate) may pass an explicit URL; otherwise Settings decide.
    explicit = config.attributes.get("sqlalchemy_url")
    return str(explicit) if explicit else Settings().sqlalchemy_url


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (``alembic upgrade --sql``)."""
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations against a live database in one transaction."""
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
