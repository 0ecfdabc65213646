"""The embedded exchange-log store: one SQLite file in WAL mode, and the writer's journal of answered batches.

Writes go through one connection held by a writer process of the node's own (`connectors.logstore.sqlite_writer`:
why a process, how the two talk, and why a batch is answered once its journal entry is durable); a whole batch is
one request to it. Queries and proofs read through an aiosqlite connection in the node, which WAL lets run beside
the writer; a read first waits until the batches already answered are in the database (`_settled`).
Times are stored as fixed-width UTC text (`2026-11-23T16:14:54.123456Z`), which sorts as time does.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from connectors.logstore.base import Bucket, GroupCommitLog, LogOpenFailed, RecordFilter, Row, student_rows
from connectors.logstore.sqlite_writer import JOURNAL_SUFFIX, SQLiteWriter, WriterFailed, tree_position
from trust.checkpoint import PrivateKey, SignedCheckpoint
from trust.transparency import Subtree

_ENCODE = msgspec.json.Encoder().encode


def sqlite_time(moment: datetime) -> str:
    if moment.tzinfo is UTC and moment.year >= 1000:
        # The text strftime below makes, in 0.4 us instead of 2.0 (every record's `at` passes here): msgspec writes a
        # UTC time as RFC 3339 with "Z", and leaves out a fraction of zero, which fixed-width text must keep.
        text = _ENCODE(moment)[1:-1].decode()
        return text if len(text) == 27 else text[:-1] + ".000000Z"
    # isoformat, not strftime: strftime writes the year 999 as "999", which sorts after "2026" as text
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _placeholder(n: int) -> str:
    return f"?{n}"


class SQLiteExchangeLog(GroupCommitLog):
    def __init__(self, path: Path, *, node_oin: str, signing_key: PrivateKey, **options: Any) -> None:
        super().__init__(node_oin=node_oin, signing_key=signing_key, **options)
        self.path = path
        self._store_writer = SQLiteWriter(path)
        self._reader_db: aiosqlite.Connection | None = None
        self._unsettled = False  # a batch was answered that a read may not find in the database yet

    @property
    def journal_path(self) -> Path:
        """The writer's journal of answered batches, beside the log file (back both up together)."""
        return self.path.with_name(self.path.name + JOURNAL_SUFFIX)

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id while it runs (for operators and tests)."""
        return self._store_writer.pid

    async def _store_open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._store_writer.start()  # creates the file and its schema before the reader opens it
        except WriterFailed as exc:
            raise LogOpenFailed(str(exc)) from exc
        self._reader_db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._reader_db.execute("PRAGMA busy_timeout=5000")

    async def _store_close(self) -> None:
        if self._reader_db is not None:
            await self._reader_db.close()
        self._reader_db = None
        await self._store_writer.close()

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader_db is None:
            raise RuntimeError("the SQLite exchange log is not open")
        return self._reader_db

    async def _store_size(self) -> int:
        return int(await self._store_writer.request("size"))

    async def _store_recover(self) -> None:
        # Nothing to undo: a batch that failed inside SQLite was rolled back by the writer, and one abandoned
        # at its timeout died with the writer process the handle killed; the next request starts a new one.
        return None

    async def _store_write(self, rows: list[Row], nodes: list[tuple[int, int, bytes]]) -> None:
        records = [r.columns(sqlite_time(r.at)) for r in rows]
        await self._store_writer.request("batch", records, student_rows(rows), nodes)
        self._unsettled = True

    async def settle(self) -> None:
        """Return once every batch answered so far is in the database file (for whatever reads it directly)."""
        self._unsettled = True
        await self._settled()

    async def _settled(self) -> None:
        """Before a read: the writer answers a batch once it is journalled and puts it into the database right
        after, so a read that follows an append asks it to finish (its requests are taken in order)."""
        if self._unsettled:
            self._unsettled = False  # first: a batch answered while this waits sets it again
            # A writer that is gone left what it answered in the database or its journal: read what is here.
            with contextlib.suppress(WriterFailed):
                await self._store_writer.request("settle")

    async def _store_subtrees(self, wanted: set[Subtree]) -> dict[Subtree, bytes]:
        await self._settled()
        if not wanted:
            return {}
        found: dict[Subtree, bytes] = {}
        subtree_at = {(tree_position(level, idx), level): (level, idx) for level, idx in wanted}
        keys = sorted(subtree_at)
        for chunk in range(0, len(keys), 400):  # stay under SQLite's bound-parameter limit
            part = keys[chunk : chunk + 400]
            values = ", ".join("(?, ?)" for _ in part)
            params = [x for key in part for x in key]
            # driven from the wanted list: one primary-key search each (a row-value IN would scan the table)
            async with self._r.execute(
                f"WITH w(pos, level) AS (VALUES {values})"
                " SELECT t.pos, t.level, t.hash FROM w JOIN tree t ON t.pos = w.pos AND t.level = w.level",
                params,
            ) as cursor:
                async for pos, level, digest in cursor:
                    found[subtree_at[(int(pos), int(level))]] = bytes(digest)
        return found

    async def _store_leaves(self, start: int, end: int) -> list[bytes]:
        await self._settled()
        async with self._r.execute(
            "SELECT hash FROM tree WHERE pos >= ? AND pos < ? AND level = 0 ORDER BY pos", (start, end)
        ) as cursor:
            return [bytes(row[0]) async for row in cursor]

    async def _store_add_checkpoint(self, checkpoint: SignedCheckpoint) -> None:
        made_at = sqlite_time(checkpoint.timestamp)
        await self._store_writer.request("checkpoint", checkpoint.tree_size, made_at, checkpoint.jws)

    async def _store_checkpoints(self, since: datetime | None, until: datetime | None, latest_only: bool) -> list[str]:
        await self._settled()
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
        await self._settled()
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
        await self._settled()
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
        return int(await self._store_writer.request("prune", sqlite_time(older_than)))
