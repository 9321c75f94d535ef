"""``outbox-relay``: the polling relay's composition root."""

from __future__ import annotations

from outbox.relay import PollingRelay
from runtime.logging import configure_logging
from runtime.process import stop_on_signals
from runtime.settings import Settings


def main() -> None:
    """Console script entry point: relay until SIGTERM or SIGINT."""
    settings = Settings()
    configure_logging(settings.log_level, "outbox-relay")
    PollingRelay(settings).run(stop_on_signals())
