"""Provoke a real write failure in an exchange log's store, and remove it again.

For integration tests of anything that appends to the log (the node refuses an exchange it cannot log):

    from tests.logstore.faults import inject_write_failure, remove_write_failure

    await inject_write_failure(log)     # every later commit of the log fails inside the database
    ...                                 # append -> LogWriteFailed, log.writable() -> False
    await remove_write_failure(log)     # commits succeed again; writable() turns True on the next one

Both work on a started SQLite or PostgreSQL log from `open_log`: they install (drop) a trigger that
raises on every insert into the records table, through a separate connection, like a full disk or a
broken constraint would make the real commit fail.
"""

from __future__ import annotations

import sqlite3

import asyncpg

from connectors.logstore.base import GroupCommitLog
from connectors.logstore.postgres import PostgresExchangeLog
from connectors.logstore.sqlite import SQLiteExchangeLog

TRIGGER = "edugate_injected_write_failure"


async def inject_write_failure(log: GroupCommitLog) -> None:
    if isinstance(log, SQLiteExchangeLog):
        with sqlite3.connect(log.path, timeout=10) as db:
            db.execute(
                f"CREATE TRIGGER IF NOT EXISTS {TRIGGER} BEFORE INSERT ON records"
                " BEGIN SELECT RAISE(ABORT, 'injected write failure'); END"
            )
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
        with sqlite3.connect(log.path, timeout=10) as db:
            db.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
        return
    if isinstance(log, PostgresExchangeLog):
        conn = await asyncpg.connect(log.dsn)
        try:
            await conn.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON records")
        finally:
            await conn.close()
        return
    raise TypeError(f"no fault injection for {type(log).__name__}")
