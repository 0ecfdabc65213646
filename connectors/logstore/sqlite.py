"""The embedded exchange-log store: one SQLite file in WAL mode with synchronous=FULL.

Two aiosqlite connections (each its own thread): the writer, used only under the log's store lock, so
one transaction is open at a time; and a reader for queries and proofs, which WAL lets run beside it.
Times are stored as fixed-width UTC text (`2026-11-23T16:14:54.123456Z`), which sorts as time does.
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from connectors.logstore.base import Bucket, GroupCommitLog, RecordFilter, Row
from trust.checkpoint import PrivateKey, SignedCheckpoint
from trust.transparency import Subtree

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
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _placeholder(n: int) -> str:
    return f"?{n}"


class SQLiteExchangeLog(GroupCommitLog):
    def __init__(self, path: Path, *, node_oin: str, signing_key: PrivateKey, **options: Any) -> None:
        super().__init__(node_oin=node_oin, signing_key=signing_key, **options)
        self.path = path
        self._writer_db: aiosqlite.Connection | None = None
        self._reader_db: aiosqlite.Connection | None = None

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)  # we issue BEGIN/COMMIT ourselves
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
        await db.execute("PRAGMA busy_timeout=5000")
        await db.execute("PRAGMA foreign_keys=ON")
        return db

    async def _store_open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_db = await self._connect()
        await self._writer_db.executescript(SCHEMA)
        self._reader_db = await self._connect()

    async def _store_close(self) -> None:
        for db in (self._reader_db, self._writer_db):
            if db is not None:
                await db.close()
        self._writer_db = self._reader_db = None

    @property
    def _w(self) -> aiosqlite.Connection:
        if self._writer_db is None:
            raise RuntimeError("the SQLite exchange log is not open")
        return self._writer_db

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader_db is None:
            raise RuntimeError("the SQLite exchange log is not open")
        return self._reader_db

    async def _store_size(self) -> int:
        async with self._w.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM tree WHERE level = 0") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def _store_recover(self) -> None:
        # A batch abandoned at its timeout may still be running in the writer's thread (calls run in order):
        # wait for it, then roll back whatever transaction it left open.
        db = self._w
        await db.execute("SELECT 1")
        if db.in_transaction:
            await db.execute("ROLLBACK")

    async def _store_write(self, rows: list[Row], nodes: list[tuple[int, int, bytes]]) -> None:
        db = self._w
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.executemany(
                "INSERT INTO records (idx, leaf_hash, exchange_id, kind, at, school, caller_oin, counterparty_oin,"
                " peer_oin, data_service, purpose, decision, records, bytes_out, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.index,
                        r.leaf_hash,
                        r.record.exchange_id,
                        r.record.kind,
                        sqlite_time(r.at),
                        r.record.school,
                        r.record.caller_oin,
                        r.record.counterparty_oin,
                        r.peer_oin,
                        r.record.data_service,
                        r.record.purpose,
                        r.record.decision,
                        r.record.records,
                        r.record.bytes_out,
                        r.body,
                    )
                    for r in rows
                ],
            )
            students = [(h, r.index) for r in rows for h in set(r.record.student_hashes)]
            if students:
                await db.executemany("INSERT INTO record_students (student_hash, idx) VALUES (?, ?)", students)
            await db.executemany("INSERT INTO tree (level, idx, hash) VALUES (?, ?, ?)", nodes)
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # a broken connection: the next batch reports it
                    await db.execute("ROLLBACK")
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
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(
                "INSERT INTO checkpoints (tree_size, made_at, jws) VALUES (?, ?, ?)",
                (checkpoint.tree_size, sqlite_time(checkpoint.timestamp), checkpoint.jws),
            )
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise

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
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(
                "DELETE FROM record_students WHERE idx IN (SELECT idx FROM records WHERE at < ?)", (cutoff,)
            )
            cursor = await db.execute("DELETE FROM records WHERE at < ?", (cutoff,))
            removed = cursor.rowcount
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        return int(removed)
