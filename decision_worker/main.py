"""``decision-worker``: the decision worker's composition root."""

from __future__ import annotations

from decision_worker.handler import CONSUMER_NAME, DecisionHandler
from messaging.consumer import InboxConsumer, run_consumer_process
from runtime.logging import configure_logging
from runtime.settings import Settings
from runtime.tracing import configure_tracing


def build_consumer(settings: Settings) -> InboxConsumer:
    """The decision worker's consume loop: credit reports in, decisions stored once."""
    return InboxConsumer(
        settings,
        CONSUMER_NAME,
        settings.group_decision_worker,
        [settings.topic_credit_reports],
        DecisionHandler(settings.topic_decisions),
    )


def main() -> None:
    """Console script entry point: decide until SIGTERM or SIGINT."""
    settings = Settings()
    configure_logging(settings.log_level, CONSUMER_NAME)
    configure_tracing(CONSUMER_NAME)
    run_consumer_process(build_consumer(settings), settings, settings.decision_worker_metrics_port)
