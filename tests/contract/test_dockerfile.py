"""The Dockerfile builds one small, non-root image that can run every prequal process.

Read as text (no engine is needed): a builder stage resolves the locked dependencies with
Poetry; the final stage copies only the virtualenv, runs as an unprivileged user, checks
/health with Python's standard library, and contains no build tool. The commands
docker-compose.yml runs in the image are console scripts of pyproject.toml.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from runtime.settings import Settings
from tests.contract.test_compose import command, load_compose, prequal_services

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BUILD_TOOLS = ("gcc", "g++", "cc1", "clang", "build-essential", "make", "poetry", "apt-get")


@dataclass
class Stage:
    """One FROM ... stage: its base image, name and instructions (keyword, arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        """The arguments of every ``keyword`` instruction, in order."""
        return [args for kw, args in self.instructions if kw == keyword]

    def text(self) -> str:
        """The stage's instructions without comments, one per line."""
        return "\n".join(f"{kw} {args}" for kw, args in self.instructions)


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    parsed = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        parsed.append((keyword.upper(), args.strip()))
    return parsed


def global_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM."""
    found = {}
    for keyword, args in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            found[name] = value
    return found


def stages() -> list[Stage]:
    """The build stages, in order, with ``${ARG}`` in FROM resolved from global ARGs."""
    args = global_args()
    result: list[Stage] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(base=base, name=name))
        elif result:
            result[-1].instructions.append((keyword, rest))
    return result


def final_stage() -> Stage:
    """The stage the image is made of: the last one."""
    return stages()[-1]


def env_variables(stage: Stage) -> dict[str, str]:
    """The ``ENV`` of a stage (``KEY=value`` form)."""
    found = {}
    for args in stage.arguments("ENV"):
        for word in shlex.split(args):
            name, _, value = word.partition("=")
            found[name] = value
    return found


def console_scripts() -> set[str]:
    """The console scripts pyproject.toml declares."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["tool"]["poetry"]["scripts"])


def test_the_image_is_built_in_a_builder_stage_and_a_final_stage_on_python_3_11_slim() -> None:
    all_stages = stages()

    assert len(all_stages) == 2
    assert all_stages[0].name == "builder"
    for stage in all_stages:
        assert stage.base.startswith("python:3.11-slim"), stage.base


def test_the_builder_installs_the_locked_main_dependencies_with_poetry_into_a_venv() -> None:
    builder = stages()[0]
    text = builder.text()

    assert any("poetry.lock" in args for args in builder.arguments("COPY"))
    assert "poetry install --only main" in text
    assert "VIRTUAL_ENV" in env_variables(builder)
    assert env_variables(builder)["VIRTUAL_ENV"] == "/opt/venv"


def test_the_builder_copies_every_package_pyproject_declares() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {entry["include"] for entry in pyproject["tool"]["poetry"]["packages"]}
    copied = {args.split()[0] for args in stages()[0].arguments("COPY")}

    assert packages <= copied, f"not copied: {sorted(packages - copied)}"


def test_the_final_stage_copies_only_the_builders_virtualenv() -> None:
    copies = final_stage().arguments("COPY")

    assert copies == ["--from=builder /opt/venv /opt/venv"]


def test_the_final_stage_has_no_build_tools() -> None:
    text = final_stage().text().lower()

    for tool in BUILD_TOOLS:
        assert not re.search(rf"(?<![\w.-]){re.escape(tool)}(?![\w+-])", text), tool
    assert "pip install" not in text


def test_the_final_stage_runs_as_a_user_that_is_not_root() -> None:
    users = final_stage().arguments("USER")

    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    # The numeric id is created in the same stage (k8s runAsNonRoot needs a number).
    assert re.fullmatch(r"\d+", user)
    assert f"--uid {user}" in final_stage().text()


def test_the_final_stage_checks_liveness_with_the_python_standard_library() -> None:
    checks = final_stage().arguments("HEALTHCHECK")

    assert len(checks) == 1
    check = checks[0]
    assert "CMD" in check
    assert "urllib.request" in check
    # Liveness, not readiness: a database outage must not mark every container unhealthy.
    assert "/livez" in check
    assert "curl" not in check
    assert "wget" not in check
    # The port comes from HEALTHCHECK_PORT, defaulting to the default command's port.
    assert "HEALTHCHECK_PORT" in check
    default_port = Settings.model_fields["command_api_port"].default
    assert env_variables(final_stage())["HEALTHCHECK_PORT"] == str(default_port)


def test_the_default_command_is_a_console_script() -> None:
    cmd = json.loads(final_stage().arguments("CMD")[-1])

    assert cmd[0] in console_scripts()
    assert not final_stage().arguments("ENTRYPOINT"), "a command must be able to pick the process"


def test_every_command_compose_runs_in_the_image_is_a_console_script_on_its_path() -> None:
    scripts = console_scripts()
    venv_on_path = env_variables(final_stage())["PATH"].split(":")[0]

    assert venv_on_path == "/opt/venv/bin"
    for name, service in prequal_services(load_compose()).items():
        assert command(service)[0] in scripts, name


def test_the_image_sets_only_real_settings_and_listens_on_every_interface() -> None:
    env = env_variables(final_stage())
    prequal = {name for name in env if name.startswith("PREQUAL_")}

    assert env["PREQUAL_HTTP_HOST"] == "0.0.0.0"  # noqa: S104 - containers
    for name in prequal:
        assert name.removeprefix("PREQUAL_").lower() in Settings.model_fields, name


def dockerignore_patterns() -> list[str]:
    """The .dockerignore patterns (comments and blank lines dropped)."""
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_the_dockerignore_keeps_environments_secrets_and_server_data_out() -> None:
    patterns = dockerignore_patterns()

    for excluded in (".git", ".venv", ".infra", ".env", "tests"):
        assert excluded in patterns, excluded


def test_the_dockerignore_keeps_everything_the_dockerfile_copies() -> None:
    patterns = [p for p in dockerignore_patterns() if not p.startswith("!")]
    sources = [
        word
        for args in stages()[0].arguments("COPY")
        for word in args.split()[:-1]
        if not word.startswith("--")
    ]

    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        ignored = [p for p in patterns if fnmatch.fnmatch(source, p.removesuffix("/"))]
        assert not ignored, f"{source} is excluded by {ignored}"
