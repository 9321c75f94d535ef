"""The whole system as six real processes, started the way ``make run`` starts them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from runtime.kafka import ensure_topics
from runtime.settings import Settings
from tests.support.processes import Process, free_port, wait_http_ok

PROCESSES = (
    "command-api",
    "query-api",
    "query-projector",
    "outbox-relay",
    "credit-worker",
    "decision-worker",
)


@dataclass(frozen=True)
class Pipeline:
    """The running system: its settings, URLs and processes."""

    settings: Settings
    command: str
    query: str
    processes: dict[str, Process]

    def metrics_url(self, name: str) -> str:
        """Where process ``name`` serves /metrics."""
        port = {
            "command-api": self.settings.command_api_port,
            "query-api": self.settings.query_api_port,
            "query-projector": self.settings.projector_metrics_port,
            "outbox-relay": self.settings.relay_metrics_port,
            "credit-worker": self.settings.credit_worker_metrics_port,
            "decision-worker": self.settings.decision_worker_metrics_port,
        }[name]
        return f"http://{self.settings.http_host}:{port}/metrics"


def start_pipeline(settings: Settings, spawn: Callable[[str, Settings], Process]) -> Pipeline:
    """Start all six processes on free ports and wait until every one is healthy."""
    ports = {
        "command_api_port": free_port(),
        "query_api_port": free_port(),
        "projector_metrics_port": free_port(),
        "relay_metrics_port": free_port(),
        "credit_worker_metrics_port": free_port(),
        "decision_worker_metrics_port": free_port(),
    }
    settings = settings.model_copy(
        update={**ports, "query_api_base_url": f"http://127.0.0.1:{ports['query_api_port']}"}
    )
    # Under CDC a row routed to a missing topic would stall the connector: create first.
    ensure_topics(settings)
    processes = {name: spawn(name, settings) for name in PROCESSES}
    running = Pipeline(
        settings,
        f"http://127.0.0.1:{settings.command_api_port}",
        settings.query_api_base_url,
        processes,
    )
    for name, process in processes.items():
        # Workers are healthy once their consumer has partitions: the pipeline is ready.
        wait_http_ok(running.metrics_url(name).replace("/metrics", "/health"), 60, process)
    return running
