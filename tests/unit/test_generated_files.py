"""The generators behind ``make schemas`` and ``make docs`` write what the checks expect."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

from runtime.settings import settings_table, write_settings_table
from schema.jsonschema import expected_schemas, write_schemas
from schema.migrate import alembic_config


def test_write_schemas_writes_every_expected_file(tmp_path: Path) -> None:
    write_schemas(tmp_path / "json")

    written = {p.name: p.read_text() for p in (tmp_path / "json").iterdir()}
    assert written == expected_schemas()


def test_write_settings_table_replaces_only_the_marked_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- settings-table:start -->\nstale\n<!-- settings-table:end -->\noutro\n"
    )

    write_settings_table(str(readme))

    text = readme.read_text()
    assert text.startswith("intro\n")
    assert text.endswith("outro\n")
    assert settings_table() in text
    assert "stale" not in text


def test_migrations_can_be_rendered_as_sql_for_a_dba_to_review() -> None:
    from alembic import command

    output = io.StringIO()
    with redirect_stdout(output):
        command.upgrade(
            alembic_config("postgresql+psycopg://reviewer@localhost/none"), "head", sql=True
        )

    sql = output.getvalue()
    assert "CREATE TABLE applications" in sql
    assert "CREATE TABLE relay_handover" in sql
