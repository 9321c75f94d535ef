"""The whole system as six real processes: POST to the command API, read the decision back.

Expected outcomes are written by hand from SPEC.md's rules (never computed by calling the
code's own rules). Scores of ordinary PANs vary by -5..+5, so those rows are chosen where
no variation can change the decision.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from runtime.settings import RelayKind, Settings
from tests.conftest import Spawn
from tests.support.auth import bearer
from tests.support.infra import connect_running
from tests.support.pipeline import PROCESSES, Pipeline, start_pipeline
from tests.support.polling import decided
from tests.support.processes import wait_until


@pytest.fixture(scope="module", params=[RelayKind.POLLING, RelayKind.DEBEZIUM], ids=str)
def relay(request: pytest.FixtureRequest, base_settings: Settings) -> Iterator[RelayKind]:
    """Each test of this module runs once per relay; Kafka Connect runs for the CDC round."""
    kind: RelayKind = request.param
    if kind is RelayKind.DEBEZIUM:
        with connect_running(base_settings):
            yield kind
    else:
        yield kind


@pytest.fixture
def pipeline(settings: Settings, relay: RelayKind, spawn: Spawn) -> Pipeline:
    """All six processes, each on free ports, against the test database and topics.

    At DEBUG, so that the per-decision trail is written and the PAN checks cover every
    line a process can write.
    """
    return start_pipeline(settings.model_copy(update={"relay": relay, "log_level": "DEBUG"}), spawn)


def _body(pan: str, income: str, amount: str, loan_type: str) -> dict[str, Any]:
    return {
        "pan_number": pan,
        "applicant_name": "E2E Applicant",
        "monthly_income_inr": income,
        "loan_amount_inr": amount,
        "loan_type": loan_type,
    }


# (PAN, income, amount, loan type) → (final status, exact score or None when it varies)
EXPECTED: list[tuple[tuple[str, str, str, str], tuple[str, int | None]]] = [
    # Fixed score 790; 75,000 × 48 = 3,600,000 > 500,000.
    (("ABCDE1234F", "75000.00", "500000.00", "PERSONAL"), ("PRE_APPROVED", 790)),
    # Fixed score 790; 3,600,000 ≤ 5,000,000.
    (("ABCDE1234F", "75000.00", "5000000.00", "PERSONAL"), ("MANUAL_REVIEW", 790)),
    # Fixed score 610, below 650, whatever the income.
    (("FGHIJ5678K", "100000.00", "100000.00", "HOME"), ("REJECTED", 610)),
    # 650 − 20 (income < 30,000) − 10 (personal) = 620, ±5 → at most 625 → rejected.
    (("KLMNO1234P", "20000.00", "100000.00", "PERSONAL"), ("REJECTED", None)),
    # 650 + 40 + 10 (home) = 700 ±5; 80,000 × 48 = 3,840,000 = amount → the boundary.
    (("PQRST6789U", "80000.00", "3840000.00", "HOME"), ("MANUAL_REVIEW", None)),
    # Same, one paisa less borrowed → income × 48 > amount.
    (("PQRST6789U", "80000.00", "3839999.99", "HOME"), ("PRE_APPROVED", None)),
    # 650 + 40 + 0 (auto) = 690 ±5; 90,000 × 48 = 4,320,000 ≤ 10,000,000.
    (("UVWXY1111Z", "90000.00", "10000000.00", "AUTO"), ("MANUAL_REVIEW", None)),
    # 650 − 20 + 0 = 630 ±5 → at most 635 → rejected.
    (("UVWXY1111Z", "29999.99", "1000.00", "AUTO"), ("REJECTED", None)),
]


async def test_stories_1_to_5_through_http_special_pans_and_manual_review(
    pipeline: Pipeline, db: psycopg.Connection
) -> None:
    async with httpx.AsyncClient(timeout=10, headers=bearer(pipeline.settings)) as http:
        for (pan, income, amount, loan_type), (status, score) in EXPECTED[:3]:
            accepted = await http.post(
                f"{pipeline.command}/applications", json=_body(pan, income, amount, loan_type)
            )
            assert accepted.status_code == 202
            location = accepted.headers["location"]
            pending = await http.get(location)
            assert pending.status_code == 200  # story 3: readable at once
            final = await decided(http, location, 15)
            assert (final["status"], final["cibil_score"]) == (status, score)
            stored = db.execute(
                "SELECT status, cibil_score FROM applications WHERE id = %s",
                (accepted.json()["application_id"],),
            ).fetchone()
            assert stored == (status, score)


async def _submit(
    http: httpx.AsyncClient, command: str, body: dict[str, Any], key: str
) -> httpx.Response:
    """POST as the README tells a client to: with a key, retrying a 503 after Retry-After.

    200 requests at once on two shared cores may meet the request deadline (a fast 503);
    the retry with the same key never makes a second application.
    """
    headers = {"Idempotency-Key": key}
    response = await http.post(f"{command}/applications", json=body, headers=headers)
    for _ in range(5):
        if response.status_code != 503:
            break
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
        response = await http.post(f"{command}/applications", json=body, headers=headers)
    return response


async def test_200_concurrent_applications_each_reach_exactly_one_expected_final_state(
    pipeline: Pipeline, db: psycopg.Connection
) -> None:
    cases = [EXPECTED[i % len(EXPECTED)] for i in range(200)]
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(
        timeout=30, limits=limits, headers=bearer(pipeline.settings)
    ) as http:
        accepted = await asyncio.gather(
            *[
                _submit(http, pipeline.command, _body(*request), f"concurrent-{index}")
                for index, (request, _) in enumerate(cases)
            ]
        )
        assert [r.status_code for r in accepted] == [202] * 200
        finals = await asyncio.gather(*[decided(http, r.headers["location"], 60) for r in accepted])

    for (request, (status, score)), final in zip(cases, finals, strict=True):
        assert final["status"] == status, request
        if score is not None:
            assert final["cibil_score"] == score, request
        assert 300 <= final["cibil_score"] <= 900
    # Exactly one decision each: one decided event per application, none pending.
    decided_events = db.execute(
        "SELECT count(*), count(DISTINCT aggregateid) FROM outbox"
        " WHERE type = 'LoanApplicationDecided'"
    ).fetchone()
    assert decided_events == (200, 200)
    assert db.execute("SELECT count(*) FROM applications WHERE status = 'PENDING'").fetchone() == (
        0,
    )


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_every_process_shows_nonzero_counts_for_the_series_it_owns(
    pipeline: Pipeline,
) -> None:
    async with httpx.AsyncClient(timeout=10, headers=bearer(pipeline.settings)) as http:
        accepted = await http.post(f"{pipeline.command}/applications", json=_body(*EXPECTED[0][0]))
        await decided(http, accepted.headers["location"], 15)
        texts = {name: (await http.get(pipeline.metrics_url(name))).text for name in PROCESSES}

    assert (
        _sample(
            texts["command-api"], "prequal_http_requests_total", service="command-api", status="202"
        )
        >= 1
    )
    assert _sample(texts["query-api"], "prequal_http_requests_total", service="query-api") >= 1
    assert _sample(texts["outbox-relay"], "prequal_relay_published_events_total") >= 1
    assert _sample(texts["outbox-relay"], "prequal_relay_publish_latency_seconds_count") >= 1
    assert "prequal_outbox_pending " in texts["outbox-relay"]
    assert (
        _sample(texts["query-projector"], "prequal_submit_to_decision_visible_seconds_count") >= 1
    )
    for consumer in ("credit-worker", "decision-worker", "query-projector"):
        assert (
            _sample(
                texts[consumer],
                "prequal_consumer_messages_total",
                consumer=consumer,
                outcome="applied",
            )
            >= 1
        ), consumer


async def test_every_consumer_process_reports_its_lag_per_partition(pipeline: Pipeline) -> None:
    consumers = ("credit-worker", "decision-worker", "query-projector")
    missing: set[str] = set(consumers)
    async with httpx.AsyncClient(timeout=10, headers=bearer(pipeline.settings)) as http:
        # The gauge is refreshed by librdkafka's statistics, every few seconds.
        deadline = asyncio.get_running_loop().time() + 30
        while missing and asyncio.get_running_loop().time() < deadline:
            for name in list(missing):
                text = (await http.get(pipeline.metrics_url(name))).text
                if f'prequal_consumer_lag{{consumer="{name}",' in text:
                    missing.discard(name)
            await asyncio.sleep(0.5)

    assert not missing, f"no prequal_consumer_lag series from {sorted(missing)}"


async def test_worker_logs_carry_the_correlation_id_of_the_original_request(
    pipeline: Pipeline,
) -> None:
    async with httpx.AsyncClient(timeout=10, headers=bearer(pipeline.settings)) as http:
        accepted = await http.post(
            f"{pipeline.command}/applications",
            json=_body(*EXPECTED[0][0]),
            headers={"X-Correlation-ID": "e2e-trace-42"},
        )
        await decided(http, accepted.headers["location"], 15)

    decision = pipeline.processes["decision-worker"]
    wait_until(lambda: "e2e-trace-42" in decision.log(), 5, decision.describe)
    lines = [json.loads(text) for text in decision.log().splitlines() if text.startswith("{")]
    [line] = [line for line in lines if line.get("correlation_id") == "e2e-trace-42"]
    assert line["event"] == "application.decided"
    assert line["level"] == "debug"
    assert line["process"] == "decision-worker"
    summaries = [line for line in lines if line["event"] == "decisions.written"]
    assert summaries
    assert all(line["level"] == "info" for line in summaries)
    assert sum(line["count"] for line in summaries) >= 1
    for name, process in pipeline.processes.items():
        assert "ABCDE1234F" not in process.log(), name


def test_every_process_stops_cleanly_on_sigterm(pipeline: Pipeline) -> None:
    for name, process in pipeline.processes.items():
        code = process.terminate()
        if name in ("command-api", "query-api"):
            # uvicorn shuts down gracefully, then re-raises the signal it received.
            assert code in (0, -15), process.describe()
            assert "Application shutdown complete" in process.log(), name
        else:
            assert code == 0, process.describe()
    for name in ("query-projector", "decision-worker"):
        assert '"event":"consumer.stopped"' in pipeline.processes[name].log(), name
    assert '"event":"credit_worker.stopped"' in pipeline.processes["credit-worker"].log()
    assert '"event":"relay.stopped"' in pipeline.processes["outbox-relay"].log()
