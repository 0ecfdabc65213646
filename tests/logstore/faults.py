"""Provoke a real write failure in an exchange log's store, and remove it again.

For integration tests of anything that appends to the log (the node refuses an exchange it cannot log):

    from tests.logstore.faults import inject_write_failure, remove_write_failure

    await inject_write_failure(log)     # every later append of the log fails before it is answered
    ...                                 # append -> LogWriteFailed, log.writable() -> False
    await remove_write_failure(log)     # appends succeed again; writable() turns True on the next one

Both work on a started SQLite or PostgreSQL log from `open_log`. PostgreSQL: a trigger that raises on every
insert into the records table, installed (dropped) through a separate connection, like a full disk or a broken
constraint would make the real commit fail. SQLite: a batch is answered once it is durable in the writer's
journal, so the failure is the journal's: the writer's file-size limit (RLIMIT_FSIZE) is set to the journal's
size, and the next append fails with EFBIG, as it would on a full disk. `refuse_in_database` installs the
trigger on SQLite too, for what happens when the database refuses a batch already answered.
"""

from __future__ import annotations

import resource
import sqlite3
from pathlib import Path

import asyncpg

from connectors.logstore.base import GroupCommitLog
from connectors.logstore.postgres import PostgresExchangeLog
from connectors.logstore.sqlite import SQLiteExchangeLog

TRIGGER = "edugate_injected_write_failure"
INJECTED = "injected write failure|File too large"  # what a refused append says: the trigger's, or EFBIG's


def limit_writer_file_size(log: SQLiteExchangeLog, limit: int | None) -> None:
    """Set (None: lift) the SQLite log writer's RLIMIT_FSIZE: a write beyond `limit` bytes fails with EFBIG."""
    pid = log.writer_pid
    assert pid is not None, "the log's writer is not running"
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard if limit is None else limit, hard))


async def inject_write_failure(log: GroupCommitLog) -> None:
    if isinstance(log, SQLiteExchangeLog):
        await log.settle()  # the batches answered so far are in the database: only the journal grows from here
        limit_writer_file_size(log, log.journal_path.stat().st_size)
        return
    if isinstance(log, PostgresExchangeLog):
        conn = await asyncpg.connect(log.dsn)
        try:
            await conn.execute(
                f"""
                CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'injected write failure'; END $$;
                DROP TRIGGER IF EXISTS {TRIGGER} ON records;
                CREATE TRIGGER {TRIGGER} BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION {TRIGGER}();
                """
            )
        finally:
            await conn.close()
        return
    raise TypeError(f"no fault injection for {type(log).__name__}")


async def remove_write_failure(log: GroupCommitLog) -> None:
    if isinstance(log, SQLiteExchangeLog):
        if log.writer_pid is not None:  # a writer started since has no limit
            limit_writer_file_size(log, None)
        return
    if isinstance(log, PostgresExchangeLog):
        conn = await asyncpg.connect(log.dsn)
        try:
            await conn.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON records")
        finally:
            await conn.close()
        return
    raise TypeError(f"no fault injection for {type(log).__name__}")


def refuse_in_database(path: Path) -> None:
    """The SQLite log's database refuses every insert into its records table from now on."""
    with sqlite3.connect(path, timeout=10) as db:
        db.execute(
            f"CREATE TRIGGER IF NOT EXISTS {TRIGGER} BEFORE INSERT ON records"
            " BEGIN SELECT RAISE(ABORT, 'injected write failure'); END"
        )


def accept_in_database(path: Path) -> None:
    with sqlite3.connect(path, timeout=10) as db:
        db.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
