"""PANs are masked wherever they appear in a log value."""

from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stdout

from hypothesis import given
from hypothesis import strategies as st

from runtime.logging import (
    bind_correlation_id,
    clear_context,
    configure_logging,
    get_logger,
    mask_pan,
)

PANS = st.from_regex(r"\A[A-Z]{5}[0-9]{4}[A-Z]\Z")


def test_a_pan_is_masked_to_its_first_five_and_last_two_characters() -> None:
    assert mask_pan("ABCDE1234F") == "ABCDE***4F"


@given(PANS, st.text(alphabet=" ,:;-/()", max_size=5))
def test_no_full_pan_survives_masking_in_any_sentence(pan: str, separator: str) -> None:
    masked = mask_pan(f"PAN{separator} {pan}{separator} again {pan}")

    assert pan not in masked
    assert masked.count(f"{pan[:5]}***{pan[8:]}") == 2


def test_text_without_a_pan_is_unchanged() -> None:
    assert mask_pan("application 42 for ABCDE123 is pending") == (
        "application 42 for ABCDE123 is pending"
    )


def test_log_lines_are_json_with_masked_pans_and_the_correlation_id() -> None:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        configure_logging("INFO", "unit")
        bind_correlation_id("corr-unit")
        get_logger("t").info("submitted", pan_number="ABCDE1234F", nested={"p": ["ZZZZZ9999Z"]})
        logging.getLogger("stdlib").warning("plain ABCDE1234F")
        clear_context()

    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert lines[0]["pan_number"] == "ABCDE***4F"
    assert lines[0]["nested"] == {"p": ["ZZZZZ***9Z"]}
    assert lines[0]["correlation_id"] == "corr-unit"
    assert lines[0]["process"] == "unit"
    assert lines[1]["event"] == "plain ABCDE***4F"
    assert "ABCDE1234F" not in buffer.getvalue()
