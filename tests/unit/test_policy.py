"""The decision: REJECTED below 650, else income against a 48-month EMI, compared exactly.

The oracle here works in whole paise and states the rule the way SPEC.md words it,
``income > amount / 48``, as an exact fraction; the code compares ``income * 48 > amount``
in ``Decimal``. Two formulations that agree everywhere are the point of the property tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from uuid import UUID

from hypothesis import example, given
from hypothesis import strategies as st

from decision_worker.policy import decide
from schema.events import ApplicationStatus, CreditReportGeneratedV1, LoanType

#: The largest NUMERIC(12,2) amount, in paise.
MAX_PAISE = 999_999_999_999
MONEY = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999999.99"), places=2)
SCORES = st.integers(min_value=300, max_value=900)
LOAN_TYPES = st.sampled_from(LoanType)


def _report(
    score: int, income: Decimal | str, amount: Decimal | str, loan_type: LoanType = LoanType.HOME
) -> CreditReportGeneratedV1:
    return CreditReportGeneratedV1(
        application_id=UUID("5d0c6f7e-2a1b-4c3d-8e9f-0a1b2c3d4e5f"),
        cibil_score=score,
        monthly_income_inr=Decimal(income),
        loan_amount_inr=Decimal(amount),
        loan_type=loan_type,
        generated_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


def _paise(amount: Decimal) -> int:
    """An amount of at most two decimals as whole paise, from its digits, not arithmetic."""
    sign, digits, exponent = amount.as_tuple()
    assert sign == 0
    assert isinstance(exponent, int)
    assert exponent >= -2
    return int("".join(map(str, digits))) * int(10 ** (exponent + 2))


def _rupees(paise: int) -> Decimal:
    return Decimal(f"{paise // 100}.{paise % 100:02d}")


def _oracle(score: int, income_paise: int, amount_paise: int) -> ApplicationStatus:
    """SPEC.md's rule, with the division done exactly as a fraction of paise."""
    if score < 650:
        return ApplicationStatus.REJECTED
    if Fraction(income_paise) > Fraction(amount_paise, 48):
        return ApplicationStatus.PRE_APPROVED
    return ApplicationStatus.MANUAL_REVIEW


@given(MONEY, MONEY, LOAN_TYPES)
def test_a_score_of_649_is_rejected_whatever_the_income(
    income: Decimal, amount: Decimal, loan_type: LoanType
) -> None:
    assert decide(_report(649, income, amount, loan_type)) is ApplicationStatus.REJECTED


@given(st.integers(min_value=300, max_value=649), MONEY, MONEY)
def test_every_score_below_650_is_rejected(score: int, income: Decimal, amount: Decimal) -> None:
    assert decide(_report(score, income, amount)) is ApplicationStatus.REJECTED


@given(st.data())
def test_a_score_of_650_with_income_times_48_above_the_amount_is_pre_approved(
    data: st.DataObject,
) -> None:
    income_paise = data.draw(st.integers(min_value=1, max_value=MAX_PAISE), label="income_paise")
    top = min(income_paise * 48 - 1, MAX_PAISE)
    amount_paise = data.draw(st.integers(min_value=1, max_value=top), label="amount_paise")

    report = _report(650, _rupees(income_paise), _rupees(amount_paise))

    assert decide(report) is ApplicationStatus.PRE_APPROVED


def test_an_income_of_exactly_the_amount_over_48_needs_manual_review() -> None:
    assert decide(_report(650, "10000.00", "480000.00")) is ApplicationStatus.MANUAL_REVIEW


def test_one_paisa_more_income_than_the_amount_over_48_is_pre_approved() -> None:
    assert decide(_report(650, "10000.01", "480000.00")) is ApplicationStatus.PRE_APPROVED


def test_one_paisa_less_income_than_the_amount_over_48_needs_manual_review() -> None:
    assert decide(_report(650, "9999.99", "480000.00")) is ApplicationStatus.MANUAL_REVIEW


def test_the_boundary_does_not_depend_on_how_many_decimals_the_amounts_were_written_with() -> None:
    assert decide(_report(650, "10000", "480000")) is ApplicationStatus.MANUAL_REVIEW
    assert decide(_report(650, "10000.0", "480000.00")) is ApplicationStatus.MANUAL_REVIEW


@given(st.integers(min_value=1, max_value=MAX_PAISE // 48), st.integers(650, 900))
def test_an_income_of_exactly_one_48th_of_the_amount_always_needs_manual_review(
    income_paise: int, score: int
) -> None:
    amount_paise = income_paise * 48

    assert decide(_report(score, _rupees(income_paise), _rupees(amount_paise))) is (
        ApplicationStatus.MANUAL_REVIEW
    )
    assert decide(_report(score, _rupees(income_paise), _rupees(amount_paise - 1))) is (
        ApplicationStatus.PRE_APPROVED
    )
    assert decide(_report(score, _rupees(income_paise + 1), _rupees(amount_paise))) is (
        ApplicationStatus.PRE_APPROVED
    )
    if amount_paise < MAX_PAISE:
        assert decide(_report(score, _rupees(income_paise), _rupees(amount_paise + 1))) is (
            ApplicationStatus.MANUAL_REVIEW
        )


@given(SCORES, MONEY, MONEY, LOAN_TYPES)
@example(650, Decimal("10000.00"), Decimal("480000.00"), LoanType.PERSONAL)
@example(649, Decimal("9999999999.99"), Decimal("0.01"), LoanType.HOME)
@example(900, Decimal("0.01"), Decimal("0.48"), LoanType.AUTO)
@example(300, Decimal("0.01"), Decimal("9999999999.99"), LoanType.AUTO)
def test_the_decision_matches_the_rule_computed_exactly_in_whole_paise(
    score: int, income: Decimal, amount: Decimal, loan_type: LoanType
) -> None:
    expected = _oracle(score, _paise(income), _paise(amount))

    assert decide(_report(score, income, amount, loan_type)) is expected


def test_a_boundary_that_float_division_gets_wrong_still_needs_manual_review() -> None:
    # 25000.04 * 48 == 1200001.92 exactly, so the income is not above the EMI and the
    # answer is MANUAL_REVIEW. In binary floating point 1200001.92 / 48 comes out as
    # 25000.039999999997, just *below* 25000.04, so a float division would pre-approve.
    income, amount = "25000.04", "1200001.92"
    assert float(amount) / 48 < float(income)

    assert decide(_report(700, income, amount)) is ApplicationStatus.MANUAL_REVIEW
