"""The SQLite log's writer process: one per file, replaced when it dies, out of the node's session."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from connectors.logstore import sqlite_writer
from connectors.logstore.base import RECORD_COLUMNS, LogOpenFailed, LogWriteFailed, RecordFilter
from connectors.logstore.sqlite_writer import SQLiteWriter, WriterFailed
from tests.logstore.processes import ended
from tests.logstore.samples import SCHOOL, record, sqlite_log, started
from trust.transparency import verify_inclusion


async def test_the_records_table_takes_its_columns_in_the_order_rows_give_them(tmp_path: Path) -> None:
    # The writer inserts rows positionally (it imports nothing of the log), so the table's order is the contract.
    log = sqlite_log(tmp_path)
    await log.start()
    await log.close()
    with sqlite3.connect(log.path) as db:
        columns = tuple(row[1] for row in db.execute("PRAGMA table_info(records)"))
    assert columns == RECORD_COLUMNS


async def test_the_writer_is_a_process_of_its_own_outside_the_nodes_session(tmp_path: Path) -> None:
    async with started(sqlite_log(tmp_path)) as log:
        pid = log.writer_pid
        assert pid is not None and pid != os.getpid()
        # a Ctrl-C at the node's terminal goes to the node alone, which then writes what it has queued
        assert os.getsid(pid) != os.getsid(0)
    assert await ended(pid)


async def test_a_writer_that_died_between_batches_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    async with started(sqlite_log(tmp_path)) as log:
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


async def test_a_writer_killed_in_the_middle_of_a_batch_fails_that_batch_and_the_log_carries_on(
    tmp_path: Path,
) -> None:
    async with started(sqlite_log(tmp_path)) as log:
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


async def test_a_second_node_on_the_same_log_file_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with started(sqlite_log(tmp_path)) as first:
        monkeypatch.setattr(sqlite_writer, "LOCK_WAIT", 0.3)
        second = sqlite_log(tmp_path)
        with pytest.raises(LogOpenFailed, match="another process writes to this log"):
            await second.start()
        assert await first.append(record()) == 0


async def test_a_log_file_that_cannot_be_opened_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "exchanges.sqlite").mkdir()  # a directory where the file should be
    writer = SQLiteWriter(tmp_path / "exchanges.sqlite")
    with pytest.raises(WriterFailed, match=r"cannot open .*exchanges\.sqlite"):
        await writer.start()
    assert writer.pid is None


async def test_a_new_log_file_has_small_pages_and_a_batch_puts_its_tree_nodes_in_one_run(tmp_path: Path) -> None:
    async with started(sqlite_log(tmp_path)) as log:
        await asyncio.gather(*(log.append(record()) for _ in range(8)))  # leaves 0..7, nodes up to level 3
    with sqlite3.connect(log.path) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == 2048
        stored = db.execute("SELECT pos, level FROM tree ORDER BY pos, level").fetchall()
    # every subtree is kept under the last leaf it covers, so the table's order is the order leaves complete them
    subtrees = [(level, idx) for level in range(4) for idx in range(8 >> level)]
    expected = sorted((sqlite_writer.tree_position(level, idx), level) for level, idx in subtrees)
    assert stored == expected
    assert stored[-4:] == [(7, 0), (7, 1), (7, 2), (7, 3)]


async def test_a_log_whose_tree_is_keyed_by_level_is_rekeyed_on_open_and_keeps_its_proofs(tmp_path: Path) -> None:
    async with started(sqlite_log(tmp_path)) as log:
        for _ in range(11):
            await log.append(record())
        before = await log.checkpoint()
    with sqlite3.connect(log.path) as db:  # the layout a log made before had
        db.execute("CREATE TABLE old (level INTEGER, idx INTEGER, hash BLOB, PRIMARY KEY (level, idx)) WITHOUT ROWID")
        db.execute("INSERT INTO old SELECT level, ((pos + 1) >> level) - 1, hash FROM tree")
        db.execute("DROP TABLE tree")
        db.execute("ALTER TABLE old RENAME TO tree")
    async with started(sqlite_log(tmp_path)) as reopened:
        assert reopened.size() == 11
        assert await reopened.root_hash(11) == before.root_hash
        leaves = await reopened.leaf_hashes()
        for index in range(11):
            proof = await reopened.inclusion_proof(index, 11)
            verify_inclusion(leaves[index], index, 11, proof, before.root_hash)
        assert await reopened.append(record()) == 11
    with sqlite3.connect(log.path) as db:
        assert [row[1] for row in db.execute("PRAGMA table_info(tree)")] == ["pos", "level", "hash"]


async def test_a_student_look_up_reads_the_student_index_not_the_schools_records(tmp_path: Path) -> None:
    async with started(sqlite_log(tmp_path)) as log:
        await log.append(record(students=("a" * 64,)))
    where, params = RecordFilter(school=SCHOOL, student_hash="a" * 64).where(lambda n: f"?{n}")
    with sqlite3.connect(log.path) as db:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN SELECT r.idx FROM records r WHERE {where}", params)]
        found = db.execute(f"SELECT r.idx FROM records r WHERE {where}", params).fetchall()
    # the records come from the index's few rows, however many records the school has
    assert plan[0] == "SEARCH r USING INTEGER PRIMARY KEY (rowid=?)", plan
    assert not any("records_school_at" in step for step in plan), plan
    assert found == [(0,)]
