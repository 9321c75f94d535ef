"""The checked-in JSON Schemas under schema/json are the event models, and real events fit them.

The ``jsonschema`` package is not a dependency, so real events are checked with the small
validator below. It knows exactly the keywords pydantic emits for our models and fails on
any other, so a schema that grows a new keyword cannot pass unchecked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from schema.events import (
    EVENT_MODELS,
    ApplicationStatus,
    CreditReportEvent,
    CreditReportGeneratedV1,
    DecidedEvent,
    Envelope,
    LoanApplicationDecidedV1,
    LoanApplicationSubmittedV1,
    LoanType,
    SubmittedEvent,
    decode_event,
)
from schema.jsonschema import SCHEMA_DIRECTORY, expected_schemas

EXPECTED = expected_schemas()
REGENERATE = "run `make schemas` (python -m schema.jsonschema) and commit the result"

# ---------------------------------------------------------------------------------------
# A JSON Schema validator for the subset of 2020-12 that pydantic generates for our models.

_ANNOTATIONS = {"$schema", "$defs", "title", "description", "default"}
_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def _is_rfc3339_date_time(text: str) -> bool:
    # RFC 3339 needs the date, the time and an offset ("Z" or "+05:30").
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


_FORMATS: dict[str, Callable[[str], bool]] = {
    "uuid": _is_uuid,
    "date-time": _is_rfc3339_date_time,
}


def schema_errors(
    value: object, schema: dict[str, Any], root: dict[str, Any], at: str
) -> list[str]:
    """Every way ``value`` breaks ``schema`` (empty when it fits), each naming its path."""
    unknown = set(schema) - _ANNOTATIONS - _CHECKS.keys()
    if unknown:
        raise AssertionError(f"{at}: the test validator does not know {sorted(unknown)}")
    errors: list[str] = []
    for keyword, check in _CHECKS.items():
        if keyword in schema:
            errors += check(value, schema, root, at)
    return errors


def _ref(value: object, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    prefix = "#/$defs/"
    ref = schema["$ref"]
    assert ref.startswith(prefix), f"{at}: only local $defs references are expected, got {ref}"
    return schema_errors(value, root["$defs"][ref.removeprefix(prefix)], root, at)


def _type(value: object, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if any(_TYPES[t](value) for t in types):
        return []
    return [f"{at}: {value!r} is not of type {schema['type']}"]


def _properties(value: object, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    errors: list[str] = []
    for name, subschema in schema["properties"].items():
        if name in value:
            errors += schema_errors(value[name], subschema, root, f"{at}.{name}")
    return errors


def _required(value: object, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    return [f"{at}: {name!r} is required" for name in schema["required"] if name not in value]


def _any_of(value: object, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    if any(not schema_errors(value, option, root, at) for option in schema["anyOf"]):
        return []
    return [f"{at}: {value!r} fits none of anyOf"]


def _enum(value: object, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    return [] if value in schema["enum"] else [f"{at}: {value!r} is not one of {schema['enum']}"]


def _const(value: object, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    same = value == schema["const"] and type(value) is type(schema["const"])
    return [] if same else [f"{at}: {value!r} is not {schema['const']!r}"]


def _string_check(
    keyword: str, fits: Callable[[str, Any], bool]
) -> Callable[[object, dict[str, Any], dict[str, Any], str], list[str]]:
    def check(value: object, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
        if not isinstance(value, str) or fits(value, schema[keyword]):
            return []
        return [f"{at}: {value!r} breaks {keyword} {schema[keyword]!r}"]

    return check


def _number_check(
    keyword: str, fits: Callable[[float, float], bool]
) -> Callable[[object, dict[str, Any], dict[str, Any], str], list[str]]:
    def check(value: object, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return []
        if fits(value, schema[keyword]):
            return []
        return [f"{at}: {value!r} breaks {keyword} {schema[keyword]!r}"]

    return check


_CHECKS: dict[str, Callable[[object, dict[str, Any], dict[str, Any], str], list[str]]] = {
    "$ref": _ref,
    "type": _type,
    "properties": _properties,
    "required": _required,
    "anyOf": _any_of,
    "enum": _enum,
    "const": _const,
    "pattern": _string_check("pattern", lambda v, p: re.search(p, v) is not None),
    "minLength": _string_check("minLength", lambda v, n: len(v) >= n),
    "maxLength": _string_check("maxLength", lambda v, n: len(v) <= n),
    "format": _string_check("format", lambda v, f: _FORMATS[f](v)),
    "minimum": _number_check("minimum", lambda v, n: v >= n),
    "maximum": _number_check("maximum", lambda v, n: v <= n),
}


# ---------------------------------------------------------------------------------------
# Real events, built the way the services build them.

APPLICATION_ID = UUID("3f2504e0-4f89-41d3-9a0c-0305e82c3301")
SUBMITTED_AT = datetime(2025, 3, 14, 9, 26, 53, 589_000, tzinfo=UTC)

SUBMITTED = SubmittedEvent(
    event_id=UUID("9b2d6c1a-7e4f-4a3b-8c5d-1e2f3a4b5c6d"),
    occurred_at=SUBMITTED_AT,
    aggregate_id=APPLICATION_ID,
    correlation_id="req-7f3a",
    causation_id="req-7f3a",
    data=LoanApplicationSubmittedV1(
        application_id=APPLICATION_ID,
        pan_number="ABCDE1234F",
        applicant_name="Rajesh Kumar",
        monthly_income_inr=Decimal("75000"),
        loan_amount_inr=Decimal("500000.5"),
        loan_type=LoanType.PERSONAL,
        submitted_at=SUBMITTED_AT,
    ),
)
CREDIT_REPORT = CreditReportEvent(
    event_id=UUID("c0ffee00-1234-4abc-8def-000000000001"),
    occurred_at=datetime(2025, 3, 14, 9, 26, 54, tzinfo=UTC),
    aggregate_id=APPLICATION_ID,
    correlation_id="req-7f3a",
    causation_id=str(SUBMITTED.event_id),
    data=CreditReportGeneratedV1(
        application_id=APPLICATION_ID,
        cibil_score=790,
        monthly_income_inr=Decimal("75000.00"),
        loan_amount_inr=Decimal("500000.50"),
        loan_type=LoanType.PERSONAL,
        generated_at=datetime(2025, 3, 14, 9, 26, 54, tzinfo=UTC),
    ),
)
DECIDED = DecidedEvent(
    event_id=UUID("c0ffee00-1234-4abc-8def-000000000002"),
    occurred_at=datetime(2025, 3, 14, 9, 26, 55, tzinfo=UTC),
    aggregate_id=APPLICATION_ID,
    correlation_id="req-7f3a",
    data=LoanApplicationDecidedV1(
        application_id=APPLICATION_ID,
        status=ApplicationStatus.PRE_APPROVED,
        cibil_score=790,
        submitted_at=SUBMITTED_AT,
        decided_at=datetime(2025, 3, 14, 9, 26, 55, tzinfo=UTC),
    ),
)
EVENTS: list[Envelope[Any]] = [SUBMITTED, CREDIT_REPORT, DECIDED]


def _checked_in(event: Envelope[Any]) -> dict[str, Any]:
    name = f"{event.event_type.value}.v{event.schema_version}.json"
    schema: dict[str, Any] = json.loads((SCHEMA_DIRECTORY / name).read_text(encoding="utf-8"))
    return schema


def _wire(event: Envelope[Any]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(event.model_dump_json())
    return value


# ---------------------------------------------------------------------------------------
# The checked-in files are the code's.


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_checked_in_schema_is_the_one_generated_from_the_models(name: str) -> None:
    path = SCHEMA_DIRECTORY / name

    assert path.exists(), f"schema/json/{name} is missing: {REGENERATE}"
    assert (
        path.read_text(encoding="utf-8") == EXPECTED[name]
    ), f"schema/json/{name} differs from the models in schema/events.py: {REGENERATE}"


def test_every_schema_file_belongs_to_an_event_model() -> None:
    orphans = sorted(p.name for p in SCHEMA_DIRECTORY.iterdir() if p.name not in EXPECTED)

    assert not orphans, (
        f"schema/json has files for no (event_type, schema_version) in EVENT_MODELS: {orphans}; "
        "restore the model, or delete the file if that version is really retired"
    )


def test_there_is_one_schema_per_event_model_named_by_its_type_and_version() -> None:
    for (event_type, version), model in EVENT_MODELS.items():
        schema = json.loads(EXPECTED[f"{event_type.value}.v{version}.json"])

        assert schema["title"] == model.__name__
        assert schema["properties"]["event_type"]["const"] == event_type.value
        assert schema["properties"]["schema_version"]["const"] == version
    assert len(EXPECTED) == len(EVENT_MODELS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_money_is_a_json_string_and_every_field_is_required_on_the_wire(name: str) -> None:
    schema = json.loads(EXPECTED[name])
    objects = [schema, *schema["$defs"].values()]

    for obj in (o for o in objects if o.get("type") == "object"):
        assert sorted(obj["required"]) == sorted(obj["properties"]), obj["title"]
        for field, subschema in obj["properties"].items():
            if field.endswith("_inr"):
                assert subschema["type"] == "string", f"{obj['title']}.{field}"


# ---------------------------------------------------------------------------------------
# Real serialised events fit their checked-in schema and decode back to themselves.


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_a_real_serialised_event_fits_its_checked_in_schema(event: Envelope[Any]) -> None:
    schema = _checked_in(event)

    assert schema_errors(_wire(event), schema, schema, "$") == []


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_a_real_serialised_event_decodes_back_to_the_same_event(event: Envelope[Any]) -> None:
    raw = event.model_dump_json().encode()

    assert decode_event(raw) == event
    assert type(decode_event(raw)) is type(event)


def test_money_goes_on_the_wire_as_a_two_decimal_string() -> None:
    data = _wire(SUBMITTED)["data"]

    assert data["monthly_income_inr"] == "75000.00"
    assert data["loan_amount_inr"] == "500000.50"


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(event: dict[str, Any]) -> None:
        target = event
        for parent in parents:
            target = target[parent]
        target[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(event: dict[str, Any]) -> None:
        target = event
        for parent in parents:
            target = target[parent]
        del target[last]

    return change


BREAKAGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "money_as_a_json_number": _set("data.monthly_income_inr", 75000.0),
    "no_event_type": _drop("event_type"),
    "no_causation_id": _drop("causation_id"),
    "another_schema_version": _set("schema_version", 2),
    "schema_version_as_a_string": _set("schema_version", "1"),
    "a_malformed_pan": _set("data.pan_number", "abcde1234f"),
    "an_unknown_loan_type": _set("data.loan_type", "GOLD"),
    "an_empty_name": _set("data.applicant_name", ""),
    "a_timestamp_without_offset": _set("occurred_at", "2025-03-14T09:26:53"),
    "an_event_id_that_is_no_uuid": _set("event_id", "42"),
    "no_payload": _drop("data"),
}


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_the_schema_check_catches_an_event_that_breaks_the_contract(
    breakage: Callable[[dict[str, Any]], None],
) -> None:
    schema = _checked_in(SUBMITTED)
    event = _wire(SUBMITTED)
    breakage(event)

    assert schema_errors(event, schema, schema, "$") != []


def test_the_score_outside_300_to_900_breaks_the_credit_report_schema() -> None:
    schema = _checked_in(CREDIT_REPORT)
    event = _wire(CREDIT_REPORT)
    event["data"]["cibil_score"] = 901

    assert schema_errors(event, schema, schema, "$") == [
        "$.data.cibil_score: 901 breaks maximum 900"
    ]
