"""The simulated CIBIL score: a pure function of the submitted application.

The same application always gets the same score, in any process and on any replay: the
small variation comes from a SHA-256 of the application id, never from Python's
per-process salted ``hash()`` or a random generator.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from uuid import UUID

from schema.events import LoanApplicationSubmittedV1, LoanType

#: PANs whose score is fixed, whatever else the application says.
FIXED_SCORES = {"ABCDE1234F": 790, "FGHIJ5678K": 610}
BASE_SCORE = 650
HIGH_INCOME = Decimal(75000)
LOW_INCOME = Decimal(30000)
LOAN_TYPE_ADJUSTMENT = {LoanType.PERSONAL: -10, LoanType.HOME: 10, LoanType.AUTO: 0}
MIN_SCORE, MAX_SCORE = 300, 900
VARIATION = 5


def variation(application_id: UUID) -> int:
    """A deterministic adjustment in -5..+5, spread evenly over application ids."""
    digest = hashlib.sha256(application_id.bytes).digest()
    return int.from_bytes(digest[:8], "big") % (2 * VARIATION + 1) - VARIATION


def score(application: LoanApplicationSubmittedV1) -> int:
    """The CIBIL score the credit worker reports for ``application`` (300..900)."""
    fixed = FIXED_SCORES.get(application.pan_number)
    if fixed is not None:
        return fixed
    result = BASE_SCORE
    if application.monthly_income_inr > HIGH_INCOME:
        result += 40
    elif application.monthly_income_inr < LOW_INCOME:
        result -= 20
    result += LOAN_TYPE_ADJUSTMENT[application.loan_type]
    result += variation(application.application_id)
    return max(MIN_SCORE, min(MAX_SCORE, result))
