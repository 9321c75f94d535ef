"""Start, stop and inspect the real local servers through infra/local.sh."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SH = ROOT / "infra" / "local.sh"

# Why infra/local.sh must not run in this session (its servers are not the suite's), or None.
_refusal: str | None = None


class LocalScriptRefused(Exception):
    """infra/local.sh was asked to act while the suite's servers are not the local ones."""


def refuse_local_script(reason: str | None) -> str | None:
    """Make :func:`local` raise :class:`LocalScriptRefused` with ``reason`` (None: allow it).

    Set for a session whose servers are containers: stopping, starting or attaching Kafka
    Connect to the local servers would not touch the servers the tests use, so the tests
    doing so fail with the reason instead of passing on the wrong servers. Returns the
    previous reason, to restore it.
    """
    global _refusal  # one session-wide switch
    previous, _refusal = _refusal, reason
    return previous


def local(*args: str, timeout: float = 300, settings: Settings | None = None) -> str:
    """Run ``infra/local.sh ARGS`` and return its output; raise with the output on failure.

    With ``settings``, the script sees them as its ``PREQUAL_*`` environment (the test
    database, slot and publication, for the Connect service).
    """
    if _refusal is not None:
        raise LocalScriptRefused(f"infra/local.sh {' '.join(args)}: {_refusal}")
    # Infra-only variables (PREQUAL_KAFKA_PORT, PREQUAL_INFRA_DIR, ...) stay as they are.
    env = {**os.environ, **(settings.as_environment() if settings is not None else {})}
    result = subprocess.run(
        [str(LOCAL_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"infra/local.sh {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout


@contextmanager
def connect_running(settings: Settings) -> Iterator[None]:
    """Kafka Connect with the Debezium outbox connector on ``settings``' database.

    Restarted with the test's settings if it was already running; stopped at the end,
    and its replication slot dropped (a leftover slot pins WAL and blocks DROP DATABASE).
    """
    local("down", "connect", settings=settings)
    local("up", "connect", settings=settings)
    try:
        yield
    finally:
        local("down", "connect", settings=settings)
        drop_slot(settings)


def drop_slot(settings: Settings, attempts: int = 3) -> None:
    """Drop the test's replication slot, waiting out a walsender that lingers after Connect."""
    for attempt in range(attempts):
        try:
            local("drop-slot", settings=settings)
            return
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            time.sleep(2)


def recreate_database(admin: Settings, name: str) -> Settings:
    """Drop and create database ``name`` on ``admin``'s server; settings pointing at it.

    Replication slots made in ``name`` (an interrupted CDC run's) are dropped first: one
    blocks DROP DATABASE. Their Connect offsets go when Connect next starts
    (infra/local.sh finds the slot gone). A slot still read by a running Connect cannot
    be dropped: ``psycopg.errors.ObjectInUse`` says so.
    """
    with psycopg.connect(admin.psycopg_conninfo, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE database = %s",
            (name,),
        )
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin.model_copy(update={"pg_database": name})
