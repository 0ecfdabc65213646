"""The SQLite log writer's journal: a batch is answered once its journal entry is durable, and written into the
database right after; what the database lacks is put in by the next writer, before it answers anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connectors.logstore.base import LogOpenFailed, LogWriteFailed
from connectors.logstore.sqlite import SQLiteExchangeLog
from tests.logstore.faults import accept_in_database, limit_writer_file_size, refuse_in_database
from tests.logstore.processes import ended
from tests.logstore.samples import SCHOOL, record, sqlite_log, started
from tests.logstore.test_write_failures import assert_tree_matches_leaves


async def indices(log: SQLiteExchangeLog) -> list[int]:
    return [s.index for s in await log.records(school=SCHOOL, oldest_first=True)]


async def answered_but_refused_by_the_database(log: SQLiteExchangeLog) -> int:
    """Append one record the database then refuses: answered (journalled), and the writer stops."""
    pid = log.writer_pid
    assert pid is not None
    refuse_in_database(log.path)
    index = await log.append(record())
    assert await ended(pid)
    return index


async def closed_with_a_batch_only_in_its_journal(directory: Path) -> SQLiteExchangeLog:
    """A log of two records, closed, whose database holds the first: the second was answered (journalled), then
    refused by the database, which takes inserts again now."""
    log = sqlite_log(directory)
    await log.start()
    await log.append(record())
    await answered_but_refused_by_the_database(log)
    await log.close()
    accept_in_database(log.path)
    return log


async def test_a_read_right_after_an_append_finds_the_record(tmp_path: Path) -> None:
    async with started(sqlite_log(tmp_path)) as log:
        for n in range(5):
            written = await asyncio.gather(*(log.append(record()) for _ in range(n + 1)))
            assert (await indices(log))[-len(written) :] == written


async def test_a_batch_the_database_refuses_after_its_answer_is_kept_and_later_batches_are_refused(
    tmp_path: Path,
) -> None:
    async with started(sqlite_log(tmp_path)) as log:
        assert await log.append(record()) == 0
        assert await answered_but_refused_by_the_database(log) == 1
        with pytest.raises(LogWriteFailed):  # the writer has stopped (or a new one could not put the batch in)
            await log.append(record())
        # a new writer must put the answered batch in before anything else, and the database still refuses it
        with pytest.raises(LogWriteFailed, match="injected write failure"):
            await log.append(record())
        assert not log.writable()
        accept_in_database(log.path)
        assert await log.append(record()) == 2
        assert log.writable()
        assert await indices(log) == [0, 1, 2]
        await assert_tree_matches_leaves(log)


async def test_a_batch_answered_but_not_in_the_database_is_there_when_the_log_opens_again(tmp_path: Path) -> None:
    await closed_with_a_batch_only_in_its_journal(tmp_path)
    async with started(sqlite_log(tmp_path)) as again:
        assert again.size() == 2
        assert await indices(again) == [0, 1]
        assert await again.append(record()) == 2
        await assert_tree_matches_leaves(again)


async def test_a_torn_last_journal_entry_is_dropped_and_the_entries_after_it_are_kept(tmp_path: Path) -> None:
    log = await closed_with_a_batch_only_in_its_journal(tmp_path)
    with log.journal_path.open("ab") as journal:  # a writer that died within its append, before answering
        journal.write(b"\x00\x00\x10\x00torn")

    async with started(sqlite_log(tmp_path)) as again:
        assert await again.append(record()) == 2
        assert await again.append(record()) == 3
    async with started(sqlite_log(tmp_path)) as third:
        assert await indices(third) == [0, 1, 2, 3]


async def test_a_journal_that_does_not_continue_the_log_file_is_refused_at_open(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    log = sqlite_log(tmp_path / "a")
    await log.start()
    await log.append(record())
    await log.checkpoint()  # which cuts the journal
    await answered_but_refused_by_the_database(log)  # so that it holds a batch from leaf 1 alone
    await log.close()

    other = sqlite_log(tmp_path / "b")
    other.journal_path.write_bytes(log.journal_path.read_bytes())  # beside a log file that holds no leaf
    with pytest.raises(LogOpenFailed, match="does not belong to this log file"):
        await other.start()


async def test_a_log_closed_cleanly_leaves_an_empty_journal(tmp_path: Path) -> None:
    log = sqlite_log(tmp_path)
    await log.start()
    await asyncio.gather(*(log.append(record()) for _ in range(20)))
    assert log.journal_path.stat().st_size > 0
    await log.close()
    assert log.journal_path.stat().st_size == 0


async def test_a_checkpoint_commits_durably_and_cuts_the_journal(tmp_path: Path) -> None:
    async with started(sqlite_log(tmp_path)) as log:
        await asyncio.gather(*(log.append(record()) for _ in range(20)))
        assert log.journal_path.stat().st_size > 0
        await log.checkpoint()
        assert log.journal_path.stat().st_size == 0
        assert await log.append(record()) == 20


async def test_a_journal_write_the_disk_refuses_leaves_no_torn_entry_before_the_next(tmp_path: Path) -> None:
    log = sqlite_log(tmp_path)
    await log.start()
    await log.append(record())
    await log.settle()
    # the disk takes 50 bytes of the next entry, then refuses the rest (EFBIG past the writer's file-size limit)
    limit_writer_file_size(log, log.journal_path.stat().st_size + 50)
    with pytest.raises(LogWriteFailed, match="File too large"):
        await log.append(record())
    limit_writer_file_size(log, None)
    await answered_but_refused_by_the_database(log)  # so the next writer must read the entry after the failed one
    await log.close()
    accept_in_database(log.path)

    async with started(sqlite_log(tmp_path)) as again:
        assert await indices(again) == [0, 1]
