"""The infra scripts' defaults agree with ``Settings``: one system, one set of defaults.

``infra/local.sh`` runs before Python does, so it cannot read ``Settings``; it repeats
each default it needs as ``${PREQUAL_<FIELD>:-<default>}``. Each literal default of a
variable that names a ``Settings`` field must equal that field's default.
"""

from __future__ import annotations

import re
from pathlib import Path

from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = re.compile(r"\$\{PREQUAL_([A-Z0-9_]+):-([^}$]*)\}")


def _script_defaults() -> list[tuple[str, str, str]]:
    """(script, field, default) for each literal default of a Settings field."""
    fields = Settings.model_fields
    found = []
    for script in sorted((ROOT / "infra").glob("*.sh")):
        for name, default in DEFAULT.findall(script.read_text()):
            if name.lower() in fields:
                found.append((script.name, name.lower(), default))
    return found


def test_the_scripts_repeat_settings_defaults_for_the_database_and_the_slot() -> None:
    fields = {field for _, field, _ in _script_defaults()}

    assert {"pg_port", "pg_user", "pg_database", "debezium_slot"} <= fields


def test_every_default_the_scripts_repeat_equals_the_settings_default() -> None:
    defaults = Settings.model_construct()
    disagreeing = [
        f"{script}: PREQUAL_{field.upper()} defaults to {value!r}, Settings to"
        f" {getattr(defaults, field)!r}"
        for script, field, value in _script_defaults()
        if _plain(getattr(defaults, field)) != value
    ]

    assert disagreeing == []


def _plain(value: object) -> str:
    """A default as a shell script spells it."""
    secret = getattr(value, "get_secret_value", None)
    return str(secret() if callable(secret) else value)
