"""The JSON Schemas of the event contracts, generated from the pydantic models.

Other teams read the checked-in files under ``schema/json/`` (one per ``(event_type,
schema_version)`` of :data:`schema.events.EVENT_MODELS`, named
``<EventType>.v<version>.json``); ``tests/contract/test_event_schemas.py`` keeps them
equal to the code. Regenerate them with ``make schemas`` (``python -m schema.jsonschema``).

The schemas describe the wire, so they are generated in pydantic's *serialization* mode:
money is a JSON string (``"75000.00"``), as ``model_dump_json()`` writes it, not the
"number or string" a model accepts on input. And because producers always write every
field (``model_dump_json()`` / ``model_dump(mode="json")``, defaults and ``null``
included), every field is listed as required (``json_schema_serialization_defaults_required``
on the models): a consumer may rely on ``event_type``, ``schema_version`` and
``causation_id`` being present.
"""

from __future__ import annotations

import json
from pathlib import Path

from schema.events import EVENT_MODELS

#: Where the checked-in schemas live: the ``json`` folder of this package.
SCHEMA_DIRECTORY = Path(__file__).resolve().parent / "json"
#: The JSON Schema dialect pydantic generates.
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_file_name(event_type: str, version: int) -> str:
    """The file name of one event's schema, such as ``LoanApplicationSubmitted.v1.json``."""
    return f"{event_type}.v{version}.json"


def expected_schemas() -> dict[str, str]:
    """The text every schema file must have, by file name, as generated from the models."""
    schemas: dict[str, str] = {}
    for event_type, version in sorted(EVENT_MODELS):
        model = EVENT_MODELS[(event_type, version)]
        schema = model.model_json_schema(mode="serialization")
        schema = {"$schema": DIALECT, **schema}
        text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        schemas[schema_file_name(event_type.value, version)] = text
    return schemas


def write_schemas(directory: Path | str) -> None:
    """Write every event's schema into ``directory`` (created if missing).

    Files of versions no longer in :data:`~schema.events.EVENT_MODELS` are left alone:
    deleting a published contract is a decision, and the contract test names such files.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    for name, text in expected_schemas().items():
        (target / name).write_text(text, encoding="utf-8")


def main() -> None:
    """Regenerate the checked-in schemas (``python -m schema.jsonschema``)."""
    write_schemas(SCHEMA_DIRECTORY)


if __name__ == "__main__":
    main()
