"""A client's rate holds across API processes: one bucket in PostgreSQL for all of them."""

from __future__ import annotations

import time

import httpx

from runtime.settings import Settings
from tests.api.conftest import valid_body
from tests.conftest import Spawn
from tests.support.auth import bearer
from tests.support.processes import free_port, wait_http_ok


def test_a_client_over_its_rate_on_two_api_processes_gets_429_then_is_served_again(
    settings: Settings, spawn: Spawn
) -> None:
    limited = settings.model_copy(update={"rate_limit_per_s": 1.0, "rate_limit_burst": 3})
    urls = []
    for _ in range(2):
        port = free_port()
        process = spawn("command-api", limited.model_copy(update={"command_api_port": port}))
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/health", 30, process)
        urls.append(url)
    headers = bearer(limited, client="greedy-channel")

    # Alternating between the processes: each takes from the same bucket of 3.
    answers = [
        httpx.post(f"{urls[i % 2]}/applications", json=valid_body(), headers=headers, timeout=10)
        for i in range(6)
    ]
    statuses = [answer.status_code for answer in answers]
    refused = next(answer for answer in answers if answer.status_code == 429)
    retry_after = int(refused.headers["retry-after"])
    time.sleep(retry_after)
    again = httpx.post(f"{urls[1]}/applications", json=valid_body(), headers=headers, timeout=10)
    other_client = httpx.post(
        f"{urls[0]}/applications",
        json=valid_body(),
        headers=bearer(limited, client="patient-channel"),
        timeout=10,
    )

    assert statuses[:3] == [202, 202, 202]
    assert 429 in statuses[3:], "the third process-crossing request emptied the bucket"
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= retry_after <= 2
    assert refused.headers["ratelimit"] == f'"default";r=0;t={retry_after}'
    assert refused.headers["ratelimit-policy"] == '"default";q=3;w=3'
    assert again.status_code == 202
    assert other_client.status_code == 202, "one client's limit is not another's"
