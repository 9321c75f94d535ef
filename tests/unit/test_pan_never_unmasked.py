"""Wherever a PAN could leave a process in text, it leaves masked: DLQ reasons, glued PANs."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from messaging.dead_letter import REASON, dead_letter_headers
from runtime.logging import mask_pan
from schema.events import UndecodableEvent, decode_event
from tests.support.events import submitted_event

PAN = "LMNOP4321Q"
MASKED = "LMNOP***1Q"
PANS = st.from_regex(r"\A[A-Z]{5}[0-9]{4}[A-Z]\Z")


@pytest.mark.parametrize(
    "text",
    [
        f"pan_{PAN}",
        f"%22{PAN}%22",
        f"ID{PAN}X",
        f"{PAN}{PAN}",
        f"event_type='x_{PAN}'",
        f'b\'{{"pan_number":"{PAN}"}}\'',
    ],
)
def test_a_pan_glued_to_other_characters_is_masked_too(text: str) -> None:
    masked = mask_pan(text)

    assert PAN not in masked
    assert MASKED in masked


@given(PANS, st.text(alphabet="abcXYZ_019%'\"=", max_size=4), st.text(max_size=4))
def test_no_pan_survives_masking_whatever_surrounds_it(pan: str, before: str, after: str) -> None:
    assert pan not in mask_pan(before + pan + after)


def _dead_letter_reason(raw: bytes) -> str:
    with pytest.raises(UndecodableEvent) as undecodable:
        decode_event(raw)
    message = Message(topic="t", partition=0, offset=7, value=raw, headers=[])
    headers = dict(dead_letter_headers(message, "test-consumer", str(undecodable.value)))
    value = headers[REASON]
    return value.decode() if isinstance(value, bytes) else str(value)


def test_a_payload_that_breaks_its_schema_is_dead_lettered_without_its_values() -> None:
    event = orjson.loads(submitted_event(pan=PAN).model_dump_json())
    event["data"]["monthly_income_inr"] = "not money"
    event["data"]["applicant_name"] = PAN

    reason = _dead_letter_reason(orjson.dumps(event))

    assert "monthly_income_inr" in reason
    assert PAN not in reason
    assert PAN[:5] not in reason, "input values are left out of the reason altogether"


@pytest.mark.parametrize(
    "event_type",
    [PAN, f"pan_{PAN}", f"{PAN}x", f"Loan{PAN}"],
)
def test_an_unknown_event_type_carrying_a_pan_is_dead_lettered_masked(event_type: str) -> None:
    raw = orjson.dumps({"event_type": event_type, "schema_version": 1})

    reason = _dead_letter_reason(raw)

    assert "unsupported event" in reason
    assert PAN not in reason
    assert MASKED in reason


def test_a_value_that_is_not_json_is_dead_lettered_without_echoing_it() -> None:
    reason = _dead_letter_reason(f"pan={PAN}".encode())

    assert PAN not in reason
