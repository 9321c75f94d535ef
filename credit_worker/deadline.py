"""A client-side deadline for librdkafka's blocking transactional calls.

librdkafka 2.x can block in ``send_offsets_to_transaction`` (and the calls after it) far
past the timeout it was given when the group coordinator's broker goes away
(confluentinc/librdkafka#5456 and #5511, open). Seen here when a broker restarted under
load: the credit worker hung until killed. So each transactional call runs with a
deadline of its own: past it, the call is abandoned as :class:`StuckCall`, and the
caller treats its producer as lost (a new one with the same ``transactional.id``
fences it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException


class StuckCall(KafkaException):
    """A transactional call did not return within its deadline; its producer is lost."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(error)
        self.error = error


def call_with_deadline(operation: Callable[[], None], deadline_s: float) -> None:
    """Run the blocking ``operation``, giving up on it after ``deadline_s`` seconds.

    Raises :class:`StuckCall` past the deadline, and whatever ``operation`` raised
    otherwise. The call runs in a daemon thread; one that never returns keeps its
    producer alive until librdkafka lets go, and never holds up the caller.
    """
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def call() -> None:
        try:
            operation()
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)
        finally:
            done.set()

    threading.Thread(target=call, name="kafka-transaction-call", daemon=True).start()
    if not done.wait(deadline_s):
        raise StuckCall(
            KafkaError(KafkaError._TIMED_OUT, f"transactional call stuck for {deadline_s:.0f} s")
        )
    if outcome[0] is not None:
        raise outcome[0]
