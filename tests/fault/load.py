"""The fault drills' open-loop load, in a process of its own, recording every answer.

POST /applications at ``--post-rate`` per second (bodies from bench.loadgen, a distinct
PAN each, each with its own Idempotency-Key) and GET /applications/{id}/status at
``--get-rate`` per second (the newest accepted id; a random one, hence 404, before any),
for ``--seconds``, request *i* scheduled at ``origin + i/rate`` whatever happened to the
others. ``--origin`` is a ``time.perf_counter()`` value of the caller: on Linux that clock
(CLOCK_MONOTONIC) is the same in every process, so the caller can place its fault on the
same time line.

Why a process: the drill's own work (Toxiproxy calls, metrics scraping, database polls)
would otherwise delay the sends and be charged to the APIs as latency.

Prints one JSON array of answers (see :class:`Answer`) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass

import aiohttp

from bench.loadgen import body_for

CLIENT_TIMEOUT_S = 20.0  # far above any deadline: a hang is measured, not cut short


@dataclass(frozen=True)
class Answer:
    """One request's outcome; times in seconds since ``origin``."""

    api: str  # "command" or "query"
    scheduled_s: float
    sent_s: float  # later than scheduled_s when the generator fell behind
    done_s: float
    status: int  # 0: no HTTP answer (refused, reset, client timeout)
    application_id: str | None = None
    error: str | None = None  # the exception, or the body of an unexpected status

    @property
    def latency_s(self) -> float:
        """From the scheduled send to the end of the answer (open loop)."""
        return self.done_s - self.scheduled_s


async def run_load(
    command_url: str,
    query_url: str,
    seconds: float,
    origin: float,
    post_rate: float,
    get_rate: float,
    token: str = "",
) -> list[Answer]:
    """Send the load described in the module docstring; every request's answer."""
    seed = random.randrange(1 << 30)
    run = uuid.uuid4().hex[:8]
    clock = time.perf_counter
    answers: list[Answer] = []
    newest: list[str] = []
    bearer = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def post(i: int, scheduled: float) -> None:
            sent = clock()
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": f"fault-{run}-{i}",
                **bearer,
            }
            status, app_id, error = 0, None, None
            try:
                async with http.post(
                    f"{command_url}/applications", data=body_for(i, seed), headers=headers
                ) as response:
                    status = response.status
                    if status == 202:
                        app_id = str((await response.json())["application_id"])
                        newest[:] = [app_id]
                    else:
                        error = (await response.text())[:300]
            except (aiohttp.ClientError, TimeoutError) as failure:
                error = type(failure).__name__
            answers.append(
                Answer(
                    "command",
                    scheduled - origin,
                    sent - origin,
                    clock() - origin,
                    status,
                    app_id,
                    error,
                )
            )

        async def get(_i: int, scheduled: float) -> None:
            sent = clock()
            app_id = newest[0] if newest else str(uuid.uuid4())
            status, error = 0, None
            try:
                async with http.get(
                    f"{query_url}/applications/{app_id}/status", headers=bearer
                ) as response:
                    status = response.status
                    text = await response.text()
                    error = None if status in (200, 404) else text[:300]
            except (aiohttp.ClientError, TimeoutError) as failure:
                error = type(failure).__name__
            answers.append(
                Answer(
                    "query",
                    scheduled - origin,
                    sent - origin,
                    clock() - origin,
                    status,
                    None,
                    error,
                )
            )

        async def schedule(rate: float, one: Callable[[int, float], Awaitable[None]]) -> None:
            tasks: list[asyncio.Task[None]] = []
            for i in range(round(seconds * rate)):
                scheduled = origin + i / rate
                await asyncio.sleep(max(0.0, scheduled - clock()))
                tasks.append(asyncio.ensure_future(one(i, scheduled)))
            await asyncio.gather(*tasks)

        await asyncio.gather(schedule(post_rate, post), schedule(get_rate, get))
    return answers


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, run the load, print the answers as JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--command-url", required=True)
    parser.add_argument("--query-url", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--origin", type=float, required=True)
    parser.add_argument("--post-rate", type=float, default=100.0)
    parser.add_argument("--get-rate", type=float, default=20.0)
    parser.add_argument("--token", default="", help="bearer token sent with every request")
    args = parser.parse_args(argv)
    load = run_load(
        args.command_url,
        args.query_url,
        args.seconds,
        args.origin,
        args.post_rate,
        args.get_rate,
        args.token,
    )
    # uvloop (uvicorn[standard] brings it) halves the generator's CPU per request.
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        answers = runner.run(load)
    print(json.dumps([asdict(a) for a in answers]))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # optional, as in bench.loadgen
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return uvloop.new_event_loop


def parse(output: str) -> list[Answer]:
    """The answers :func:`main` printed."""
    return [Answer(**fields) for fields in json.loads(output)]


if __name__ == "__main__":
    main()
