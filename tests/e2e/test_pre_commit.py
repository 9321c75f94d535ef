"""SPEC.md story 6: committing badly formatted code is refused, and the file is reformatted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BAD = "def greet( name ):\n    return   'hello '+name   \n"
FORMATTED = 'def greet(name):\n    return "hello " + name\n'


def _git(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_story_6_a_badly_formatted_commit_is_refused_and_the_file_comes_back_formatted(
    tmp_path: Path,
) -> None:
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    repo = tmp_path / "scratch"
    repo.mkdir()
    shutil.copy(ROOT / ".pre-commit-config.yaml", repo)
    assert _git(repo, "init", "-q", env=env).returncode == 0
    installed = subprocess.run(
        [str(venv_bin / "pre-commit"), "install"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    (repo / "greet.py").write_text(BAD)
    _git(repo, "add", ".", env=env)

    refused = _git(repo, "commit", "-m", "badly formatted", env=env)

    assert refused.returncode != 0
    assert "black" in refused.stdout + refused.stderr
    assert (repo / "greet.py").read_text() == FORMATTED
    _git(repo, "add", ".", env=env)
    accepted = _git(repo, "commit", "-m", "formatted", env=env)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
