"""The pipeline benchmark (:mod:`bench.pipeline_bench`) on the three-broker KRaft cluster.

Starts PostgreSQL and three Kafka nodes of its own (``infra/local.sh`` with
``PREQUAL_KAFKA_BROKERS=3`` in ``.infra/bench-cluster``, on free ports, so that neither a
running system nor another run's servers are touched), runs the same rates as ``make
bench``'s pipeline section with every topic at 3 replicas and ``min.insync.replicas`` 2
(so each ``acks=all`` write waits for a second broker), and stops the servers again.
The figures sit beside the single node's in docs/benchmarks.md.

Usage: ``python -m bench.cluster_pipeline [--rates 100,200,300] [--seconds 20] [--out F]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench import pipeline_bench
from bench.relay_latency import ROOT
from bench.report import emit_json
from runtime.settings import Settings
from tests.support.cluster import KafkaCluster

INFRA_DIR = ROOT / ".infra" / "bench-cluster"


def measure(rates: list[float], seconds: float) -> dict[str, Any]:
    """The pipeline figures at each rate on a cluster started and stopped here."""
    cluster = KafkaCluster.on_free_ports(INFRA_DIR)
    cluster.local("down")  # an interrupted run's servers (same infra dir, other ports)
    started = time.monotonic()
    cluster.local("up")
    try:
        admin = Settings(
            kafka_brokers=3,
            pg_port=cluster.pg_port,
            kafka_bootstrap_servers=cluster.bootstrap_servers,
        )
        result = pipeline_bench.measure(admin, rates, seconds)
        result["kafka"] = "three KRaft nodes, 3 replicas, min.insync.replicas 2, acks=all"
        result["broker_rss_mib"] = {
            f"kafka-{node}": round(mib) for node, mib in cluster.rss_mib().items()
        }
        result["wall_s"] = round(time.monotonic() - started, 1)
        return result
    finally:
        cluster.local("down")


def main() -> None:
    """Run the pipeline benchmark on the cluster and print (and optionally save) the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default="100,200,300,400,500")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    emit_json(measure([float(r) for r in args.rates.split(",")], args.seconds), args.out)


if __name__ == "__main__":
    main()
