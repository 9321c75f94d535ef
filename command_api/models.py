"""The HTTP bodies of the command API (separate from table rows and event payloads)."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schema.events import LoanType

InrAmount = Annotated[
    Decimal,
    Field(
        gt=0,
        max_digits=12,
        decimal_places=2,
        description="Amount in INR: greater than 0, at most 2 decimals, below 10^10.",
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
