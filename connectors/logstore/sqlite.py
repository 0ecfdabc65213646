"""The embedded exchange-log store: one SQLite file in WAL mode with synchronous=FULL.

Two connections, each on its own thread. The writer is a plain sqlite3 connection on a single-thread executor,
used only under the log's store lock, so one transaction is open at a time; a whole batch (BEGIN, the inserts,
COMMIT with its fsync) is one call to that thread, because every hand-over between the event loop and a thread
costs more than the inserts themselves when the loop is busy with exchanges. The reader is an aiosqlite
connection for queries and proofs, which WAL lets run beside the writer.
Times are stored as fixed-width UTC text (`2026-11-23T16:14:54.123456Z`), which sorts as time does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from connectors.logstore.base import RECORD_COLUMNS, Bucket, GroupCommitLog, RecordFilter, Row, student_rows
from trust.checkpoint import PrivateKey, SignedCheckpoint
from trust.transparency import Subtree

T = TypeVar("T")



def _insert(db: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """All `rows` in one INSERT statement (per 500 rows, within SQLite's bound-parameter limit) rather than
    `executemany`: the sqlite3 module gives up the GIL around every step and must take it back after each, and
    while the event loop is busy each take can wait up to the switch interval. One statement per table keeps a
    batch to a handful of those waits (measured with a busy main thread: 106 ms -> 9 ms for 16 records)."""
    for start in range(0, len(rows), 500):
        part = rows[start : start + 500]
        values = ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * len(part))
        db.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}", [v for row in part for v in row])

SCHEMA = """
CREATE TABLE IF NOT EXISTS tree (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    idx INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL,
    exchange_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    school TEXT,
    caller_oin TEXT,
    counterparty_oin TEXT,
    peer_oin TEXT,
    data_service TEXT,
    purpose TEXT,
    decision TEXT NOT NULL,
    records INTEGER,
    bytes_out INTEGER,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_school_at ON records (school, at);
CREATE INDEX IF NOT EXISTS records_caller_at ON records (caller_oin, at);
CREATE INDEX IF NOT EXISTS records_counterparty_at ON records (counterparty_oin, at);
CREATE INDEX IF NOT EXISTS records_at ON records (at);
CREATE INDEX IF NOT EXISTS records_exchange ON records (exchange_id);
CREATE TABLE IF NOT EXISTS record_students (
    student_hash TEXT NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (student_hash, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tree_size INTEGER NOT NULL,
    made_at TEXT NOT NULL,
    jws TEXT NOT NULL
);
"""


def sqlite_time(moment: datetime) -> str:
    if moment.tzinfo is UTC and moment.year >= 1000:
        # the text strftime below makes, in 1.8 us instead of 3.1 (every record's `at` passes here): "+00:00" -> "Z"
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _placeholder(n: int) -> str:
    return f"?{n}"


class SQLiteExchangeLog(GroupCommitLog):
    def __init__(self, path: Path, *, node_oin: str, signing_key: PrivateKey, **options: Any) -> None:
        super().__init__(node_oin=node_oin, signing_key=signing_key, **options)
        self.path = path
        self._writer_db: sqlite3.Connection | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._reader_db: aiosqlite.Connection | None = None

    async def _store_open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exchange-log-writer")
        self._writer_db = await self._in_writer(self._connect_writer)
        self._reader_db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._reader_db.execute("PRAGMA busy_timeout=5000")

    def _connect_writer(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; the connection lives on the writer thread only.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        return db

    async def _store_close(self) -> None:
        if self._reader_db is not None:
            await self._reader_db.close()
        if self._writer_db is not None:
            await self._in_writer(self._writer_db.close)
        if self._writer_thread is not None:
            self._writer_thread.shutdown(wait=True)
        self._writer_db = self._reader_db = None
        self._writer_thread = None

    async def _in_writer(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function` on the writer's thread; calls run one at a time, in the order they were made."""
        if self._writer_thread is None:
            raise RuntimeError("the SQLite exchange log is not open")
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, partial(function, *args))

    @property
    def _w(self) -> sqlite3.Connection:
        if self._writer_db is None:
            raise RuntimeError("the SQLite exchange log is not open")
        return self._writer_db

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader_db is None:
            raise RuntimeError("the SQLite exchange log is not open")
        return self._reader_db

    async def _store_size(self) -> int:
        db = self._w
        row = await self._in_writer(
            lambda: db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM tree WHERE level = 0").fetchone()
        )
        return int(row[0]) if row else 0

    async def _store_recover(self) -> None:
        # A batch abandoned at its timeout may still be running in the writer's thread (calls run in order):
        # this runs after it, and rolls back whatever transaction it left open.
        db = self._w

        def recover() -> None:
            if db.in_transaction:
                db.execute("ROLLBACK")

        await self._in_writer(recover)

    async def _store_write(self, rows: list[Row], nodes: list[tuple[int, int, bytes]]) -> None:
        records = [r.columns(sqlite_time(r.at)) for r in rows]
        students = student_rows(rows)
        abandoned = threading.Event()
        try:
            await self._in_writer(self._write_batch, records, students, nodes, abandoned)
        except asyncio.CancelledError:
            # The log gave up on this batch (commit timeout) and told its waiters it failed: the call still
            # running on the writer's thread must not commit it after all.
            abandoned.set()
            raise

    def _write_batch(
        self,
        records: list[tuple[Any, ...]],
        students: list[tuple[str, int]],
        nodes: list[tuple[int, int, bytes]],
        abandoned: threading.Event,
    ) -> None:
        db = self._w
        db.execute("BEGIN IMMEDIATE")
        try:
            _insert(db, "records", RECORD_COLUMNS, records)
            _insert(db, "record_students", ("student_hash", "idx"), students)
            _insert(db, "tree", ("level", "idx", "hash"), nodes)
            if abandoned.is_set():
                raise TimeoutError("the batch was abandoned before it committed")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # a broken connection: the next batch reports it
                    db.execute("ROLLBACK")
            raise

    async def _store_subtrees(self, wanted: set[Subtree]) -> dict[Subtree, bytes]:
        if not wanted:
            return {}
        found: dict[Subtree, bytes] = {}
        pairs = sorted(wanted)
        for chunk in range(0, len(pairs), 400):  # stay under SQLite's bound-parameter limit
            part = pairs[chunk : chunk + 400]
            values = ", ".join("(?, ?)" for _ in part)
            params = [x for pair in part for x in pair]
            # driven from the wanted list: one primary-key search each (a row-value IN would scan the table)
            async with self._r.execute(
                f"WITH w(level, idx) AS (VALUES {values})"
                " SELECT t.level, t.idx, t.hash FROM w JOIN tree t ON t.level = w.level AND t.idx = w.idx",
                params,
            ) as cursor:
                async for level, idx, digest in cursor:
                    found[(int(level), int(idx))] = bytes(digest)
        return found

    async def _store_leaves(self, start: int, end: int) -> list[bytes]:
        async with self._r.execute(
            "SELECT hash FROM tree WHERE level = 0 AND idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ) as cursor:
            return [bytes(row[0]) async for row in cursor]

    async def _store_add_checkpoint(self, checkpoint: SignedCheckpoint) -> None:
        db = self._w
        values = (checkpoint.tree_size, sqlite_time(checkpoint.timestamp), checkpoint.jws)

        def add() -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO checkpoints (tree_size, made_at, jws) VALUES (?, ?, ?)", values)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

        await self._in_writer(add)

    async def _store_checkpoints(self, since: datetime | None, until: datetime | None, latest_only: bool) -> list[str]:
        if latest_only:
            sql, params = "SELECT jws FROM checkpoints ORDER BY id DESC LIMIT 1", []
        else:
            sql = "SELECT jws FROM checkpoints WHERE made_at >= ? AND made_at <= ? ORDER BY id"
            params = [sqlite_time(since) if since else "", sqlite_time(until) if until else "9999"]
        async with self._r.execute(sql, params) as cursor:
            return [str(row[0]) async for row in cursor]

    async def _store_records(
        self, filters: RecordFilter, limit: int, offset: int, oldest_first: bool
    ) -> list[tuple[int, bytes, bytes]]:
        where, params = filters.where(_placeholder, at=sqlite_time)
        order = "ASC" if oldest_first else "DESC"
        n = len(params)
        sql = (
            f"SELECT r.idx, r.leaf_hash, r.body FROM records r WHERE {where}"
            f" ORDER BY r.idx {order} LIMIT ?{n + 1} OFFSET ?{n + 2}"
        )
        async with self._r.execute(sql, [*params, limit, offset]) as cursor:
            return [(int(i), bytes(leaf), bytes(body)) async for i, leaf, body in cursor]

    async def _store_totals(
        self, school: str, since: datetime | None, until: datetime | None, bucket: Bucket
    ) -> list[dict[str, Any]]:
        width, suffix = (10, "T00:00:00Z") if bucket == "day" else (13, ":00:00Z")
        where, params = RecordFilter(school=school, since=since, until=until).where(_placeholder, at=sqlite_time)
        sql = f"""
            SELECT substr(r.at, 1, {width}) || '{suffix}' AS bucket, r.peer_oin, r.data_service,
                   SUM(r.kind = 'decision'),
                   SUM(r.kind = 'decision' AND r.decision = 'allowed'),
                   SUM(r.kind = 'decision' AND r.decision = 'denied'),
                   COALESCE(SUM(CASE WHEN r.kind = 'outcome' THEN r.records END), 0),
                   COALESCE(SUM(CASE WHEN r.kind = 'outcome' THEN r.bytes_out END), 0)
            FROM records r WHERE {where}
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        """  # only fixed fragments are formatted in; values are bound
        async with self._r.execute(sql, params) as cursor:
            return [
                {
                    "bucket": datetime.fromisoformat(b),
                    "counterparty": peer,
                    "data_service": service,
                    "exchanges": int(exchanges),
                    "allowed": int(allowed),
                    "denied": int(denied),
                    "records": int(records),
                    "bytes_out": int(bytes_out),
                }
                async for b, peer, service, exchanges, allowed, denied, records, bytes_out in cursor
            ]

    async def _store_prune(self, older_than: datetime) -> int:
        db = self._w
        cutoff = sqlite_time(older_than)

        def prune() -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM record_students WHERE idx IN (SELECT idx FROM records WHERE at < ?)", (cutoff,))
                removed = db.execute("DELETE FROM records WHERE at < ?", (cutoff,)).rowcount
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return int(removed)

        return await self._in_writer(prune)
