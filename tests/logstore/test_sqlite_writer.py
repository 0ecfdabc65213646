"""The SQLite log's writer process: one per file, replaced when it dies, out of the node's session."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from connectors.logstore import sqlite_writer
from connectors.logstore.base import RECORD_COLUMNS, LogOpenFailed, LogWriteFailed
from connectors.logstore.sqlite import SQLiteExchangeLog
from connectors.logstore.sqlite_writer import SQLiteWriter, WriterFailed
from tests.logstore.processes import ended
from tests.logstore.samples import NODE, SCHOOL, record
from trust.checkpoint import load_or_create_signing_key


def sqlite_log(tmp_path: Path) -> SQLiteExchangeLog:
    key = load_or_create_signing_key(tmp_path / "log-signing.key")
    return SQLiteExchangeLog(tmp_path / "exchanges.sqlite", node_oin=NODE, signing_key=key)


async def test_the_records_table_takes_its_columns_in_the_order_rows_give_them(tmp_path: Path) -> None:
    # The writer inserts rows positionally (it imports nothing of the log), so the table's order is the contract.
    log = sqlite_log(tmp_path)
    await log.start()
    await log.close()
    with sqlite3.connect(log.path) as db:
        columns = tuple(row[1] for row in db.execute("PRAGMA table_info(records)"))
    assert columns == RECORD_COLUMNS


async def test_the_writer_is_a_process_of_its_own_outside_the_nodes_session(tmp_path: Path) -> None:
    log = sqlite_log(tmp_path)
    await log.start()
    try:
        pid = log.writer_pid
        assert pid is not None and pid != os.getpid()
        # a Ctrl-C at the node's terminal goes to the node alone, which then writes what it has queued
        assert os.getsid(pid) != os.getsid(0)
    finally:
        await log.close()
    assert await ended(pid)


async def test_a_writer_that_died_between_batches_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    log = sqlite_log(tmp_path)
    await log.start()
    try:
        assert [await log.append(record()) for _ in range(3)] == [0, 1, 2]
        first = log.writer_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert await ended(first)
        await asyncio.sleep(0.2)  # the loop reaps the child
        assert await log.append(record()) == 3
        assert log.writer_pid not in (None, first)
        stored = await log.records(school=SCHOOL, oldest_first=True)
        assert [s.index for s in stored] == [0, 1, 2, 3]
    finally:
        await log.close()


async def test_a_writer_killed_in_the_middle_of_a_batch_fails_that_batch_and_the_log_carries_on(
    tmp_path: Path,
) -> None:
    log = sqlite_log(tmp_path)
    await log.start()
    try:
        await log.append(record())
        blocker = sqlite3.connect(log.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer's next batch waits inside BEGIN IMMEDIATE
        pending = asyncio.ensure_future(log.append(record()))
        await asyncio.sleep(0.3)
        pid = log.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(LogWriteFailed, match="writer process ended"):
            await pending
        blocker.execute("ROLLBACK")
        blocker.close()
        assert not log.writable()
        assert await log.append(record()) == 1  # the lost batch took no leaf
        assert log.writable()
    finally:
        await log.close()


async def test_a_second_node_on_the_same_log_file_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = sqlite_log(tmp_path)
    await first.start()
    try:
        monkeypatch.setattr(sqlite_writer, "LOCK_WAIT", 0.3)
        second = sqlite_log(tmp_path)
        with pytest.raises(LogOpenFailed, match="another process writes to this log"):
            await second.start()
        assert await first.append(record()) == 0
    finally:
        await first.close()


async def test_a_log_file_that_cannot_be_opened_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "exchanges.sqlite").mkdir()  # a directory where the file should be
    writer = SQLiteWriter(tmp_path / "exchanges.sqlite")
    with pytest.raises(WriterFailed, match=r"cannot open .*exchanges\.sqlite"):
        await writer.start()
    assert writer.pid is None
