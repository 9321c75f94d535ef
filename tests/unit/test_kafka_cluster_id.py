"""The local backend's Kafka cluster id is one the storage tool accepts, every draw.

CI once failed because ``infra/local.sh`` drew an id starting with ``-`` (one draw in 64):
``kafka-storage format --cluster-id -x…`` reads it as an option and exits with
"expected one argument". Kafka's own ``Uuid.randomUuid`` draws again in that case; so
does the script, and it passes the id as ``--cluster-id=ID`` besides.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (ROOT / "infra" / "local.sh").read_text()
ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}")


def _function(name: str) -> str:
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", SCRIPT, re.M | re.S)
    assert match, f"{name} not found in infra/local.sh"
    return match.group(0)


def _bash(program: str) -> str:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", program],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def test_a_drawn_cluster_id_that_starts_with_a_dash_is_drawn_again(tmp_path: Path) -> None:
    # head stands in for /dev/urandom: 0xF8 encodes as "+" (then "-"), zeros as "A".
    calls = tmp_path / "calls"
    program = f"""
    head() {{
      echo x >>{calls}
      if [[ $(wc -l <{calls}) == 1 ]]; then printf '\\xf8'; else printf '\\x00'; fi
      printf '\\x00%.0s' {{1..15}}
    }}
    {_function("kafka_cluster_id")}
    kafka_cluster_id
    """

    drawn = _bash(program).strip()

    assert drawn == "A" * 22
    assert calls.read_text().count("x") == 2


def test_every_drawn_cluster_id_has_the_shape_of_kafkas_random_uuid() -> None:
    program = f"""
    {_function("kafka_cluster_id")}
    for _ in {{1..500}}; do kafka_cluster_id; done
    """

    drawn = _bash(program).split()

    assert len(drawn) == 500
    assert [i for i in drawn if not ID.fullmatch(i)] == []


def test_the_storage_format_passes_the_id_joined_to_its_option() -> None:
    format_function = _function("kafka_format")

    assert '--cluster-id="$id"' in format_function
    assert '--cluster-id "$id"' not in format_function
