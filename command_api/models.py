"""The HTTP bodies of the command API (separate from table rows and event payloads)."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from schema.events import LoanType

#: The one grammar of an amount given as a string: digits, then optionally a point and
#: digits ("75000", "75000.5", "75000.00"). No sign, exponent, spaces or underscores:
#: Python's Decimal() accepts "75_000" and " 7.5e4 ", which no client should rely on.
#: A JSON number is read exactly (runtime.exact_json.ExactJsonRequest), exponent included.
#: Either way the value must then be > 0 with at most 2 decimals and 12 digits, which is
#: NUMERIC(12,2) and the events' wire format ^[0-9]{1,10}\.[0-9]{2}$.
AMOUNT_STRING = re.compile(r"[0-9]+(\.[0-9]+)?")
_PAISE = Decimal("0.01")


def _amount(value: object) -> object:
    if isinstance(value, bool):  # JSON true is not 1 rupee
        raise ValueError("must be a JSON number or a decimal string")
    if isinstance(value, str):
        if not AMOUNT_STRING.fullmatch(value):
            raise ValueError(
                "must be a JSON number or a decimal string of digits with an optional"
                ' point, such as "75000.00"'
            )
        return Decimal(value)
    return value


def storable_text(value: str) -> str:
    """``value`` if PostgreSQL can store it as it is, else ValueError (a 422 naming the field).

    A text column takes any Unicode but NUL, and the driver sends UTF-8, which a lone
    surrogate (U+D800, which JSON can carry as an escape) cannot be. Anything that passes validation
    must be storable, or it would be a 500.
    """
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("must be valid Unicode text (a lone surrogate is not)") from error
    return value


InrAmount = Annotated[
    Decimal,
    BeforeValidator(_amount),
    Field(
        gt=0,
        max_digits=12,
        decimal_places=2,
        description="Amount in INR: greater than 0, at most 2 decimals, below 10^10; a JSON"
        ' number or a decimal string such as "75000.00".',
    ),
    # 7.5E+4 and 75000 are both 75000.00: one form for the row, the event and the key.
    AfterValidator(lambda amount: amount.quantize(_PAISE)),
    # Pydantic cannot state the Decimal constraints on a number-or-string and would leak
    # them as keys that are no JSON Schema (Redocly's struct rule); the bounds JSON Schema
    # can say, it says here, and the description says the rest.
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10**10},
                {"type": "string"},
            ]
        }
    ),
]


class ApplicationRequest(BaseModel):
    """A loan prequalification application, as a client submits it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "pan_number": "ABCDE1234F",
                    "applicant_name": "Rajesh Kumar",
                    "monthly_income_inr": 75000.00,
                    "loan_amount_inr": 500000.00,
                    "loan_type": "PERSONAL",
                }
            ]
        },
    )

    pan_number: Annotated[
        str,
        Field(
            pattern=r"^[A-Z]{5}[0-9]{4}[A-Z]$",
            description="Permanent Account Number: 5 capital letters, 4 digits, 1 capital letter.",
            examples=["ABCDE1234F"],
        ),
    ]
    applicant_name: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
        AfterValidator(storable_text),
        Field(
            description="The applicant's full name, 1 to 255 characters.", examples=["Rajesh Kumar"]
        ),
    ]
    monthly_income_inr: Annotated[InrAmount, Field(examples=["75000.00"])]
    loan_amount_inr: Annotated[InrAmount, Field(examples=["500000.00"])]
    loan_type: Annotated[
        LoanType, Field(description="PERSONAL, HOME or AUTO.", examples=["PERSONAL"])
    ]

    def fingerprint(self) -> str:
        """A digest of the request's meaning, to tell a retry from a different request.

        Amounts are normalised (``75000`` and ``75000.00`` are the same request).
        """
        canonical = "\x1f".join(
            (
                self.pan_number,
                self.applicant_name,
                format(self.monthly_income_inr.normalize(), "f"),
                format(self.loan_amount_inr.normalize(), "f"),
                self.loan_type.value,
            )
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class ApplicationAccepted(BaseModel):
    """The answer to an accepted application: its id, and that it is pending."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"application_id": "3f2b8c1e-5d4a-4e8b-9c7d-1a2b3c4d5e6f", "status": "PENDING"}
            ]
        }
    )

    application_id: UUID
    status: Literal["PENDING"] = "PENDING"
