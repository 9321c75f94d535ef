"""The loops' retry backoff: exponential, capped, reset by a success, and jittered."""

from __future__ import annotations

from runtime.process import Backoff


def test_each_delay_doubles_from_the_first_plus_at_most_the_first_in_jitter_up_to_the_cap() -> None:
    backoff = Backoff(first=0.2, cap=5.0)

    delays = [backoff.next() for _ in range(8)]

    for attempt, delay in enumerate(delays):
        floor = min(0.2 * 2**attempt, 5.0)
        assert floor <= delay <= min(floor + 0.2, 5.0), (attempt, delay)
    assert delays[-1] == 5.0


def test_a_success_starts_the_delays_over() -> None:
    backoff = Backoff(first=0.2, cap=5.0)
    for _ in range(5):
        backoff.next()

    backoff.reset()

    assert 0.2 <= backoff.next() <= 0.4


def test_processes_that_failed_together_do_not_retry_in_lockstep() -> None:
    first_delays = {Backoff(first=0.2, cap=5.0).next() for _ in range(20)}

    assert len(first_delays) > 1, "every process would retry at the same moment"
