"""Start, stop and inspect the real local servers through infra/local.sh."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SH = ROOT / "infra" / "local.sh"


def local(*args: str, timeout: float = 300) -> str:
    """Run ``infra/local.sh ARGS`` and return its output; raise with the output on failure."""
    result = subprocess.run(
        [str(LOCAL_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"infra/local.sh {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def running_services() -> set[str]:
    """Which of postgres and kafka run now."""
    status = local("status")
    return {line.split(":", 1)[0].strip() for line in status.splitlines() if ": running" in line}
