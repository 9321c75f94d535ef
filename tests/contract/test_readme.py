"""The README's configuration table is the one generated from Settings."""

from __future__ import annotations

import re
from pathlib import Path

from runtime.settings import settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_configuration_table_matches_the_settings() -> None:
    text = README.read_text()
    match = re.search(
        r"<!-- settings-table:start -->\n(.*)\n<!-- settings-table:end -->", text, re.DOTALL
    )

    assert match is not None, "README.md lost its settings-table markers"
    assert match.group(1) == settings_table(), "run `make docs` to regenerate the table"
