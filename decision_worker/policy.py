"""The prequalification decision: a pure function of the credit report."""

from __future__ import annotations

from schema.events import ApplicationStatus, CreditReportGeneratedV1

MIN_SCORE = 650
#: The EMI is approximated as the loan amount spread over this many months.
EMI_MONTHS = 48


def decide(report: CreditReportGeneratedV1) -> ApplicationStatus:
    """REJECTED below 650; otherwise PRE_APPROVED if income exceeds the EMI, else MANUAL_REVIEW.

    ``income > amount / 48`` is compared as ``income * 48 > amount`` in ``Decimal``: a
    division would round, and the boundary (income exactly amount / 48) must be
    MANUAL_REVIEW.
    """
    if report.cibil_score < MIN_SCORE:
        return ApplicationStatus.REJECTED
    if report.monthly_income_inr * EMI_MONTHS > report.loan_amount_inr:
        return ApplicationStatus.PRE_APPROVED
    return ApplicationStatus.MANUAL_REVIEW
