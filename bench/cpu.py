"""Who used the CPU during a measurement: every process on the machine, by role.

Read from ``/proc`` (Linux): user + system time of each process, grouped by what it is
(one of prequal's console scripts, PostgreSQL, the Kafka broker, Kafka Connect, the load
generator). The benchmark quotes it so a missed target says where the cores went.
"""

from __future__ import annotations

import os
from pathlib import Path

ROLES = (
    "command-api",
    "query-api",
    "query-projector",
    "outbox-relay",
    "credit-worker",
    "decision-worker",
    "bench.baseline_api",
    "bench.loadgen",
)
_NEEDLES = (
    *((role, role) for role in ROLES),
    ("postgres", "postgresql"),
    ("ConnectStandalone", "kafka-connect"),
    ("kafka.Kafka", "kafka-broker"),
)
_TICKS = os.sysconf("SC_CLK_TCK")


def _role(pid: Path) -> str | None:
    try:
        cmdline = (pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    for needle, role in _NEEDLES:
        if needle in cmdline:
            return role
    if "spawn_main" in cmdline:
        return _parent_role(pid)
    return None


def _parent_role(pid: Path) -> str | None:
    # uvicorn's worker processes are spawned children of the console script.
    try:
        ppid = (pid / "stat").read_text().rsplit(")", 1)[1].split()[1]
    except OSError:
        return None
    return _role(Path("/proc") / ppid)


def snapshot() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by every process we can name, by pid."""
    found: dict[int, tuple[str, float]] = {}
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        role = _role(pid)
        if role is None:
            continue
        try:
            fields = (pid / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(pid.name)] = (role, (int(fields[11]) + int(fields[12])) / _TICKS)
    return found


def seconds_used(before: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds (user + system) used per role since ``before``.

    A process that started since counts from zero; one that exited since is lost (the
    benchmark's processes outlive each measurement).
    """
    used: dict[str, float] = {}
    for pid, (role, now) in snapshot().items():
        start = before.get(pid, (role, 0.0))[1]
        used[role] = used.get(role, 0.0) + now - start
    return dict(sorted(used.items()))


def usage(before: dict[int, tuple[str, float]], seconds: float) -> dict[str, float]:
    """Cores used per role since ``before`` (1.0 = one core busy the whole time)."""
    cores = {role: used / seconds for role, used in seconds_used(before).items()}
    return {role: round(value, 2) for role, value in cores.items() if value >= 0.005}
