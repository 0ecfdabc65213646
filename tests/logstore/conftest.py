"""Fixtures: an exchange log on each store (SQLite file; a fresh PostgreSQL database per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from connectors.logstore import open_log
from connectors.logstore.base import GroupCommitLog
from connectors.logstore.record import ExchangeRecord
from gateway.config import LogSection
from tests.databases import postgres_database
from tests.logstore.samples import NODE, record


@pytest.fixture
def make_record() -> Callable[..., ExchangeRecord]:
    return record


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    async with postgres_database() as dsn:
        yield dsn


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
