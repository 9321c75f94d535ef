"""The fault drills' rule for exactly-once credit reports (tests/fault/checks.py)."""

from __future__ import annotations

from tests.fault.checks import credit_report_violations, relay_redeliveries


def test_a_report_read_once_per_published_submitted_event_breaks_nothing() -> None:
    reports = {"a": ["r-a"], "b": ["r-b", "r-b"]}
    submitted = {"a": ["s-a"], "b": ["s-b", "s-b"]}  # the relay published b twice

    assert credit_report_violations(reports, submitted, {"a", "b"}) == []
    assert relay_redeliveries(submitted) == 1


def test_a_report_read_more_often_than_its_submitted_event_is_a_double_commit() -> None:
    violations = credit_report_violations({"a": ["r-a", "r-a"]}, {"a": ["s-a"]}, {"a"})

    assert violations == [
        "1 credit reports committed more often than their submitted event was published"
        " (reports, submitted): [('a', (2, 1))]"
    ]


def test_two_report_ids_for_one_application_are_always_two_reports() -> None:
    violations = credit_report_violations({"a": ["r-1", "r-2"]}, {"a": ["s-a", "s-a"]}, {"a"})

    assert violations == ["1 applications with two different report event ids"]


def test_an_accepted_application_without_a_report_is_named() -> None:
    violations = credit_report_violations({}, {"a": ["s-a"]}, {"a"})

    assert violations == ["1 accepted applications without a credit report"]
