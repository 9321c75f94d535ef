"""The HTTP body model: fingerprints tell a retry from a different request."""

from __future__ import annotations

from decimal import Decimal

from command_api.models import ApplicationRequest
from schema.events import money_text


def _request(**overrides: object) -> ApplicationRequest:
    body: dict[str, object] = {
        "pan_number": "ABCDE1234F",
        "applicant_name": "Rajesh Kumar",
        "monthly_income_inr": "75000.00",
        "loan_amount_inr": "500000.00",
        "loan_type": "PERSONAL",
    }
    body.update(overrides)
    return ApplicationRequest.model_validate(body)


def test_the_same_amount_written_two_ways_has_the_same_fingerprint() -> None:
    assert _request().fingerprint() == _request(monthly_income_inr=75000).fingerprint()


def test_any_changed_field_changes_the_fingerprint() -> None:
    base = _request().fingerprint()
    changed = [
        _request(pan_number="ABCDE1234G"),
        _request(applicant_name="Rajesh K"),
        _request(monthly_income_inr="75000.01"),
        _request(loan_amount_inr="1"),
        _request(loan_type="HOME"),
    ]
    assert all(r.fingerprint() != base for r in changed)


def test_surrounding_spaces_of_the_name_are_trimmed() -> None:
    assert _request(applicant_name="  Asha  ").applicant_name == "Asha"


def test_money_on_the_wire_always_has_two_decimals() -> None:
    assert money_text(Decimal("75000")) == "75000.00"
    assert money_text(Decimal("0.1")) == "0.10"
