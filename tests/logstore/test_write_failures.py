"""A store that cannot commit: appends fail loudly, the log reports it, and recovers once the fault is gone."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from connectors.logstore.base import GroupCommitLog, LogWriteFailed
from connectors.logstore.postgres import PostgresExchangeLog
from connectors.logstore.sqlite import SQLiteExchangeLog
from tests.logstore.faults import INJECTED, inject_write_failure, remove_write_failure
from tests.logstore.samples import SCHOOL, record
from trust import transparency


async def assert_tree_matches_leaves(log: GroupCommitLog) -> None:
    leaves = await log.leaf_hashes()
    assert len(leaves) == log.size()
    assert await log.root_hash(log.size()) == transparency.root_hash(leaves)
    stored = await log.records(school=SCHOOL, limit=10_000, oldest_first=True)
    assert [s.index for s in stored] == list(range(len(leaves)))
    assert [s.leaf_hash for s in stored] == leaves


async def test_a_failing_commit_fails_every_waiter_and_the_log_recovers(log: GroupCommitLog) -> None:
    assert await log.append(record()) == 0
    assert log.writable()

    await inject_write_failure(log)
    results = await asyncio.gather(*(log.append(record()) for _ in range(25)), return_exceptions=True)
    assert all(isinstance(r, LogWriteFailed) for r in results), results
    assert not log.writable()
    with pytest.raises(LogWriteFailed, match=INJECTED):
        await log.append(record())
    assert not log.writable()

    await remove_write_failure(log)
    assert await log.append(record()) == 1  # nothing of the failed batches took a leaf
    assert log.writable()
    await asyncio.gather(*(log.append(record()) for _ in range(10)))
    await assert_tree_matches_leaves(log)


async def test_a_checkpoint_after_a_failure_covers_only_committed_records(log: GroupCommitLog) -> None:
    for _ in range(3):
        await log.append(record())
    await inject_write_failure(log)
    with pytest.raises(LogWriteFailed):
        await log.append(record())
    await remove_write_failure(log)  # (a full disk refuses the checkpoint's own row too)
    checkpoint = await log.checkpoint()
    assert checkpoint.tree_size == 3
    assert checkpoint.root_hash == transparency.root_hash(await log.leaf_hashes())


@pytest.mark.postgres
@pytest.mark.parametrize("log_section", ["postgresql"], indirect=True)
async def test_a_postgresql_backend_terminated_mid_commit_fails_the_batch_and_a_new_connection_takes_over(
    log: GroupCommitLog,
) -> None:
    assert isinstance(log, PostgresExchangeLog)
    await log.append(record())
    admin = await asyncpg.connect(log.dsn)
    try:
        # hold the records table so the writer's transaction waits inside its INSERT, then kill that backend
        locker = admin.transaction()
        await locker.start()
        await admin.execute("LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
        pending = asyncio.ensure_future(log.append(record()))
        waiting: list[int] = []
        for _ in range(200):
            waiting = [
                r["pid"]
                for r in await admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ]
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting, "the writer never reached the locked table"
        await admin.fetch("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", waiting)
        await locker.rollback()
    finally:
        await admin.close()
    with pytest.raises(LogWriteFailed):
        await pending
    assert not log.writable()
    assert await log.append(record()) == 1
    assert log.writable()
    await assert_tree_matches_leaves(log)


async def test_a_store_that_hangs_fails_the_batch_after_the_commit_timeout(
    open_test_log: Callable[..., GroupCommitLog],
) -> None:
    log = open_test_log(commit_timeout=0.5)
    await log.start()
    try:
        await log.append(record())
        async with holding_the_write_lock(log):
            started = time.monotonic()
            with pytest.raises(LogWriteFailed, match="TimeoutError"):
                await log.append(record())
            assert time.monotonic() - started < 3
            assert not log.writable()
        assert await log.append(record()) == 1
        assert log.writable()
        await assert_tree_matches_leaves(log)
    finally:
        await log.close()


@contextlib.asynccontextmanager
async def holding_the_write_lock(log: GroupCommitLog) -> AsyncIterator[None]:
    """Another session takes the store's write lock, as a long transaction or a stuck disk would."""
    if isinstance(log, PostgresExchangeLog):
        admin = await asyncpg.connect(log.dsn)
        try:
            async with admin.transaction():
                await admin.execute("LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
                yield
        finally:
            await admin.close()
        return
    assert isinstance(log, SQLiteExchangeLog)
    other = sqlite3.connect(log.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()
