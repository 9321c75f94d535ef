"""Poetry installs on a stock Debian Python, which refuses pip into itself (PEP 668)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import ROOT

DEBIAN_PYTHON = Path("/usr/bin/python3")


def test_debians_own_python_refuses_pip_so_the_bootstrap_must_not_use_it() -> None:
    assert DEBIAN_PYTHON.exists(), "this suite runs on Debian: /usr/bin/python3 is its Python"
    result = subprocess.run(
        [str(DEBIAN_PYTHON), "-m", "pip", "install", "--dry-run", "poetry==2.2.1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    managed = list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED"))
    if managed:  # Debian 12 and later: pip refuses outright
        assert result.returncode != 0
        assert "externally-managed-environment" in result.stderr
    else:  # pip itself may be absent from a minimal Debian Python
        assert result.returncode != 0 or "Would install" in result.stdout


@pytest.mark.timeout(600)
def test_the_bootstrap_installs_poetry_in_a_virtualenv_of_its_own_from_debians_python(
    tmp_path: Path,
) -> None:
    home = tmp_path / "poetry"
    env = {
        **os.environ,
        "PREQUAL_BOOTSTRAP_PYTHON": str(DEBIAN_PYTHON),
        "PREQUAL_POETRY_HOME": str(home),
    }
    installed = subprocess.run(
        [str(ROOT / "infra" / "install-poetry.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=True,
    )
    poetry = Path(installed.stdout.strip())
    version = subprocess.run(
        [str(poetry), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    again = subprocess.run(
        [str(ROOT / "infra" / "install-poetry.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert poetry == (home / "bin" / "poetry").resolve()
    assert "2.2.1" in version.stdout
    assert again.stdout.strip() == str(poetry), "a second run reuses the environment"
    assert "installing" not in again.stderr
    # The interpreter of the environment is Debian's, not whichever python3 came first.
    assert (home / "pyvenv.cfg").read_text().count(str(DEBIAN_PYTHON.parent)) >= 1
