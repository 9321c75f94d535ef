"""``prequal-ops topics create``: prequal's Kafka topics."""

from __future__ import annotations

import typer
from confluent_kafka import KafkaException

from ops.console import UNREACHABLE
from runtime.kafka import all_topics, ensure_topics
from runtime.settings import Settings

app = typer.Typer(help="Kafka topics.", no_args_is_help=True)


@app.command("create")
def create_topics() -> None:
    """Create prequal's topics that do not exist yet.

    Partitions, replicas and retention from settings: one replica on the single local
    broker, three with min.insync.replicas=2 on the cluster (PREQUAL_KAFKA_BROKERS=3).
    """
    settings = Settings()
    try:
        ensure_topics(settings)
    except KafkaException as error:
        typer.echo(f"Kafka not reachable: {error}", err=True)
        raise typer.Exit(UNREACHABLE) from error
    typer.echo(", ".join(all_topics(settings)))
