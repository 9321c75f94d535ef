"""``query-projector``: the projection's composition root."""

from __future__ import annotations

from messaging.consumer import InboxConsumer, run_consumer_process
from query_api.projector import CONSUMER_NAME, project
from runtime.logging import configure_logging
from runtime.settings import Settings
from runtime.tracing import configure_tracing


def build_consumer(settings: Settings) -> InboxConsumer:
    """The projector's consume loop: submitted and decided events into the read model."""
    return InboxConsumer(
        settings,
        CONSUMER_NAME,
        settings.group_projector,
        [settings.topic_submitted, settings.topic_decisions],
        project,
    )


def main() -> None:
    """Console script entry point: project until SIGTERM or SIGINT."""
    settings = Settings()
    configure_logging(settings.log_level, CONSUMER_NAME)
    configure_tracing(CONSUMER_NAME)
    run_consumer_process(build_consumer(settings), settings, settings.projector_metrics_port)
