"""Fixtures: an exchange log on each store (SQLite file; a fresh PostgreSQL database per test)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from connectors.logstore import open_log
from connectors.logstore.base import GroupCommitLog
from connectors.logstore.record import ExchangeRecord
from gateway.config import LogSection

NODE = "00000003273100010000"
PUBLISHER = "00000003123456780000"
OTHER_PUBLISHER = "00000003876543210000"
SCHOOL = "104A158"
OTHER_SCHOOL = "20XY001"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def record(
    *,
    school: str | None = SCHOOL,
    caller: str = PUBLISHER,
    service: str = "leermateriaalgebruik",
    purpose: str | None = "b",
    decision: str = "allowed",
    kind: str = "decision",
    at: datetime | None = None,
    students: tuple[str, ...] = (),
    records: int | None = None,
    exchange_id: str | None = None,
) -> ExchangeRecord:
    return ExchangeRecord(
        exchange_id=exchange_id or str(uuid.uuid4()),
        kind=kind,  # type: ignore[arg-type]
        at=at or datetime.now(UTC),
        node=NODE,
        caller_oin=caller,
        counterparty_oin=NODE,
        data_service=service,
        method="PUT",
        route="/v1/progress/{id}",
        purpose=purpose,
        school=school,
        decision=decision,  # type: ignore[arg-type]
        step=None if decision == "allowed" else "keurmerk",
        reason=None if decision == "allowed" else "no keurmerk",
        http_status=200 if decision == "allowed" else 403,
        records=records,
        student_hashes=students,
    )


@pytest.fixture
def make_record() -> Callable[..., ExchangeRecord]:
    return record


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A fresh database of its own on the real PostgreSQL server, dropped afterwards."""
    name = f"edugate_t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def log_section(request: pytest.FixtureRequest, tmp_path: Path) -> LogSection:
    if request.param == "postgresql":
        dsn = request.getfixturevalue("pg_dsn")
        return LogSection(store="postgresql", dsn=dsn)
    return LogSection(store="sqlite", path=tmp_path / "exchanges.sqlite")


@pytest.fixture
def open_test_log(log_section: LogSection, tmp_path: Path) -> Callable[..., GroupCommitLog]:
    """Open (not start) the log under test; the same call again opens the same store."""

    def opener(**options: Any) -> GroupCommitLog:
        options.setdefault("checkpoint_interval", None)  # tests make checkpoints when they want them
        return open_log(log_section, state_dir=tmp_path, node_oin=NODE, **options)

    return opener


@pytest.fixture
async def log(open_test_log: Callable[..., GroupCommitLog]) -> AsyncIterator[GroupCommitLog]:
    started = open_test_log()
    await started.start()
    yield started
    await started.close()
