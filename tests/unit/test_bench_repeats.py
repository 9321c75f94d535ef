"""The benchmark's rounds: medians, spreads and the order the sides run in."""

from __future__ import annotations

import pytest

from bench.repeats import ROUNDS, interleaved, spread


def test_a_figure_is_quoted_as_its_median_with_the_range_of_its_rounds() -> None:
    figure = spread([1250.0, 750.0, 1000.0])

    assert (figure.median, figure.low, figure.high, figure.rounds) == (1000.0, 750.0, 1250.0, 3)
    assert figure.format() == "1,000 (750 to 1,250)"
    assert figure.format(1, " ms") == "1,000.0 ms (750.0 to 1,250.0)"


def test_rounds_that_agree_are_quoted_as_one_figure() -> None:
    assert spread([600.0, 600.0, 600.0]).format(unit="/s") == "600/s"


def test_an_even_number_of_rounds_has_the_mean_of_the_middle_two_as_median() -> None:
    assert spread([1.0, 2.0, 3.0, 10.0]).median == 2.5


def test_no_rounds_is_an_error_rather_than_a_figure() -> None:
    with pytest.raises(ValueError, match="no rounds"):
        spread([])


def test_the_sides_of_a_comparison_take_turns_round_by_round() -> None:
    order = interleaved(ROUNDS, ["outbox", "baseline"])

    assert order == [
        (1, "outbox"),
        (1, "baseline"),
        (2, "outbox"),
        (2, "baseline"),
        (3, "outbox"),
        (3, "baseline"),
    ]
    assert ROUNDS >= 3
