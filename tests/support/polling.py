"""Reading an application's status as a client following the README would."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx


async def decided(http: httpx.AsyncClient, location: str, timeout_s: float) -> dict[str, Any]:
    """Poll ``location`` (a status URL) until it is decided; its body.

    A 503 (the read deadline met on two shared cores) is waited out after Retry-After;
    any other answer but 200 fails the test, and so does ``timeout_s`` seconds PENDING.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await http.get(location)
        if response.status_code == 503:
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            continue
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] != "PENDING":
            return body
        # Hundreds of pollers at once: 0.2 s apart keeps them from crowding out the rest.
        await asyncio.sleep(0.2)
    raise AssertionError(f"{location} still PENDING after {timeout_s}s")
