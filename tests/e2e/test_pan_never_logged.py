"""Six real processes handle applications with known PANs: no log shows a PAN unmasked.

The run goes through every path a PAN takes: accepted applications decided end to end,
refused requests that carry a PAN (a 422 body, a PAN in the path, a PAN as the method),
and poison messages carrying a PAN that each consumer dead-letters. Then every process's
whole log (and /metrics, and the dead-letter reasons) is searched for the full PANs.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from runtime.logging import mask_pan
from runtime.settings import Settings
from tests.conftest import Spawn
from tests.support.auth import bearer
from tests.support.kafka import consume, count_at_least, produce
from tests.support.pipeline import PROCESSES, Pipeline, start_pipeline
from tests.support.polling import decided

# Fixed-score PANs and ordinary ones; each is decided end to end.
DECIDED_PANS = ["ABCDE1234F", "FGHIJ5678K", "KQZXW2468M", "RTYUI1357V"]
# Only ever inside refused requests and poison messages.
REFUSED_PAN = "HJKLM9753N"
POISON_PAN = "VBNMA8642S"
ALL_PANS = [*DECIDED_PANS, REFUSED_PAN, POISON_PAN]


@pytest.fixture
def pipeline(settings: Settings, spawn: Spawn) -> Pipeline:
    """All six processes (polling relay) on free ports, on the test database and topics.

    At DEBUG: every line a process can write is searched for a PAN, the per-decision
    ``application.decided`` line included.
    """
    return start_pipeline(settings.model_copy(update={"log_level": "DEBUG"}), spawn)


def _body(pan: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pan_number": pan,
        "applicant_name": "Log Check",
        "monthly_income_inr": "80000.00",
        "loan_amount_inr": "400000.00",
        "loan_type": "HOME",
    }
    body.update(overrides)
    return body


def _poison(settings: Settings) -> None:
    """One undecodable message per consumed topic, each carrying a PAN where it can leak."""
    for topic in (settings.topic_submitted, settings.topic_credit_reports):
        produce(
            settings,
            topic,
            [
                # Echoed in the reason: "unsupported event 'pan_…' schema_version 1".
                (
                    "poison-type",
                    orjson.dumps({"event_type": f"pan_{POISON_PAN}", "schema_version": 1}),
                    [],
                ),
                # A payload that breaks its schema, a PAN among its values.
                (
                    "poison-payload",
                    orjson.dumps(
                        {
                            "event_type": "LoanApplicationSubmitted",
                            "schema_version": 1,
                            "data": {"pan_number": POISON_PAN, "monthly_income_inr": POISON_PAN},
                        }
                    ),
                    [],
                ),
            ],
        )


async def test_no_process_logs_a_full_pan_and_the_masked_form_shows_the_right_logs_were_read(
    pipeline: Pipeline,
) -> None:
    command = pipeline.command
    async with httpx.AsyncClient(timeout=15, headers=bearer(pipeline.settings)) as http:
        accepted = [
            await http.post(f"{command}/applications", json=_body(pan)) for pan in DECIDED_PANS
        ]
        assert [r.status_code for r in accepted] == [202] * len(DECIDED_PANS)

        # Refused requests that carry a PAN.
        refused = [
            await http.post(f"{command}/applications", json=_body(REFUSED_PAN, loan_type="X")),
            await http.post(f"{command}/applications", json={REFUSED_PAN: REFUSED_PAN}),
            await http.post(
                f"{command}/applications",
                content=f"pan_number={REFUSED_PAN}",
                headers={"content-type": "text/plain"},
            ),
            await http.get(f"{command}/applications/{REFUSED_PAN}"),
            await http.get(f"{pipeline.query}/applications/{REFUSED_PAN}/status"),
            # Not a method uvicorn's parser knows: refused (400) before the app sees it.
            await http.request(REFUSED_PAN, f"{command}/applications"),
        ]
        assert [r.status_code for r in refused] == [422, 422, 415, 404, 422, 400]
        for response in refused:
            assert REFUSED_PAN not in response.text

        _poison(pipeline.settings)
        finals = [await decided(http, r.headers["location"], 30) for r in accepted]
        assert all(d["status"] != "PENDING" for d in finals)
        metrics = {name: (await http.get(pipeline.metrics_url(name))).text for name in PROCESSES}

    dead = consume(pipeline.settings, pipeline.settings.topic_dlq, until=count_at_least(4))
    assert len(dead) >= 4, "each consumer dead-letters both poison messages"
    for name in ("credit-worker", "decision-worker"):
        pipeline.processes[name].wait_for_log("dead_lettered", 10)
    # Stopped, so that every line each process would write is on disk.
    for process in pipeline.processes.values():
        process.terminate()
    logs = {name: process.log() for name, process in pipeline.processes.items()}

    # The right logs: each process wrote some, and the PAN went through them masked.
    assert set(logs) == set(PROCESSES)
    for name, text in logs.items():
        assert text.strip(), f"{name} wrote no log"
    everything = "\n".join(logs.values())
    for pan in DECIDED_PANS:
        assert mask_pan(pan) in logs["command-api"], pan
    assert mask_pan(POISON_PAN) in logs["credit-worker"]
    assert mask_pan(POISON_PAN) in logs["decision-worker"]
    assert '"event":"application.decided"' in logs["decision-worker"]
    assert "request" in logs["query-api"]

    for pan in ALL_PANS:
        leaking = [name for name, text in logs.items() if pan in text]
        assert not leaking, f"{pan} unmasked in the logs of {leaking}"
        leaking = [name for name, text in metrics.items() if pan in text]
        assert not leaking, f"{pan} in the metrics of {leaking}"
        for message in dead:
            reason = message.headers.get("dlq_reason", "")
            assert reason, message.headers
            assert pan not in reason, reason
    assert everything.count("***") >= len(DECIDED_PANS)
