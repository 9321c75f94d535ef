"""Progress of long operator commands: a bar on a terminal, plain lines everywhere else."""

from __future__ import annotations

import contextlib
import io
import os
import pty

import pytest

from ops import progress as progress_module
from ops.progress import progress


def test_off_a_terminal_progress_is_plain_lines_with_the_total_rate_and_eta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)  # a line per update
    with progress("replayed", 200, plain=False, stream=out) as update:
        update(50)
        update(100)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("replayed: 50/200 (")
    assert "/s, ETA " in lines[0]
    assert lines[-1].startswith("replayed: 100/200 ("), "the last line says where it ended"


def test_with_json_progress_stays_plain_even_on_a_terminal_and_learns_a_late_total() -> None:
    out = io.StringIO()
    with progress("read", None, plain=True, stream=out) as update:
        update(3, total=7)

    assert out.getvalue().splitlines()[-1].startswith("read: 3/7 (")


def test_on_a_terminal_progress_is_a_rich_bar_with_count_rate_and_eta() -> None:
    leader, follower = pty.openpty()
    terminal = os.fdopen(follower, "w")
    try:
        with progress("redriven", 4, plain=False, stream=terminal) as update:
            update(4)
        terminal.close()  # the final render is written; now read all of it
        chunks = []
        with contextlib.suppress(OSError):  # EIO: nothing more, the other end is closed
            while chunk := os.read(leader, 65536):
                chunks.append(chunk)
        shown = b"".join(chunks).decode(errors="replace")
    finally:
        if not terminal.closed:
            terminal.close()
        os.close(leader)

    assert "redriven" in shown
    assert "4/4" in shown
    assert "ETA" in shown
