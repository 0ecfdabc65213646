"""The PostgreSQL exchange-log store (asyncpg): the same tables, the same group commit as SQLite.

A small pool: each batch takes a connection, writes one transaction and commits with
synchronous_commit=on (set per connection, whatever the server default), so a resolved append survives
a crash of the node or of the database server. A connection that breaks mid-batch fails that batch
only; the pool replaces it for the next one. One log per database: the tree lives in table `tree`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from connectors.logstore.base import RECORD_COLUMNS, Bucket, GroupCommitLog, RecordFilter, Row, student_rows
from trust.checkpoint import PrivateKey, SignedCheckpoint
from trust.transparency import Subtree

SCHEMA = """
CREATE TABLE IF NOT EXISTS tree (
    level smallint NOT NULL,
    idx bigint NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS records (
    idx bigint PRIMARY KEY,
    leaf_hash bytea NOT NULL,
    exchange_id text NOT NULL,
    kind text NOT NULL,
    at timestamptz NOT NULL,
    school text,
    caller_oin text,
    counterparty_oin text,
    peer_oin text,
    data_service text,
    purpose text,
    decision text NOT NULL,
    records integer,
    bytes_out bigint,
    body bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS records_school_at ON records (school, at);
CREATE INDEX IF NOT EXISTS records_caller_at ON records (caller_oin, at);
CREATE INDEX IF NOT EXISTS records_counterparty_at ON records (counterparty_oin, at);
CREATE INDEX IF NOT EXISTS records_at ON records (at);
CREATE INDEX IF NOT EXISTS records_exchange ON records (exchange_id);
CREATE TABLE IF NOT EXISTS record_students (
    student_hash text NOT NULL,
    idx bigint NOT NULL,
    PRIMARY KEY (student_hash, idx)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id bigserial PRIMARY KEY,
    tree_size bigint NOT NULL,
    made_at timestamptz NOT NULL,
    jws text NOT NULL
);
"""


def _placeholder(n: int) -> str:
    return f"${n}"


class PostgresExchangeLog(GroupCommitLog):
    def __init__(self, dsn: str, *, node_oin: str, signing_key: PrivateKey, **options: Any) -> None:
        super().__init__(node_oin=node_oin, signing_key=signing_key, **options)
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None

    @property
    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL exchange log is not open")
        return self._pool

    async def _store_open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=4, server_settings={"synchronous_commit": "on"}
        )
        # one schema creation at a time, should two nodes start on a fresh database together
        async with self._p.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('edugate exchange log schema'))")
            await conn.execute(SCHEMA)

    async def _store_close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _store_size(self) -> int:
        value = await self._p.fetchval("SELECT COALESCE(MAX(idx) + 1, 0) FROM tree WHERE level = 0")
        return int(value)

    async def _store_recover(self) -> None:
        pass  # a failed batch's transaction died with its connection or was rolled back when the pool took it back

    async def _store_write(self, rows: list[Row], nodes: list[tuple[int, int, bytes]]) -> None:
        async with self._p.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table(
                "records",
                columns=list(RECORD_COLUMNS),
                records=[r.columns(r.at) for r in rows],
            )
            students = student_rows(rows)
            if students:
                await conn.copy_records_to_table("record_students", columns=["student_hash", "idx"], records=students)
            await conn.copy_records_to_table("tree", columns=["level", "idx", "hash"], records=nodes)

    async def _store_subtrees(self, wanted: set[Subtree]) -> dict[Subtree, bytes]:
        if not wanted:
            return {}
        levels = [level for level, _ in wanted]
        indexes = [index for _, index in wanted]
        rows = await self._p.fetch(
            "SELECT t.level, t.idx, t.hash FROM tree t"
            " JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, idx) ON t.level = w.level AND t.idx = w.idx",
            levels,
            indexes,
        )
        return {(int(r["level"]), int(r["idx"])): bytes(r["hash"]) for r in rows}

    async def _store_leaves(self, start: int, end: int) -> list[bytes]:
        rows = await self._p.fetch(
            "SELECT hash FROM tree WHERE level = 0 AND idx >= $1 AND idx < $2 ORDER BY idx", start, end
        )
        return [bytes(r["hash"]) for r in rows]

    async def _store_add_checkpoint(self, checkpoint: SignedCheckpoint) -> None:
        await self._p.execute(
            "INSERT INTO checkpoints (tree_size, made_at, jws) VALUES ($1, $2, $3)",
            checkpoint.tree_size,
            checkpoint.timestamp,
            checkpoint.jws,
        )

    async def _store_checkpoints(self, since: datetime | None, until: datetime | None, latest_only: bool) -> list[str]:
        if latest_only:
            rows = await self._p.fetch("SELECT jws FROM checkpoints ORDER BY id DESC LIMIT 1")
        else:
            rows = await self._p.fetch(
                "SELECT jws FROM checkpoints WHERE ($1::timestamptz IS NULL OR made_at >= $1)"
                " AND ($2::timestamptz IS NULL OR made_at <= $2) ORDER BY id",
                since,
                until,
            )
        return [str(r["jws"]) for r in rows]

    async def _store_records(
        self, filters: RecordFilter, limit: int, offset: int, oldest_first: bool
    ) -> list[tuple[int, bytes, bytes]]:
        where, params = filters.where(_placeholder)
        order = "ASC" if oldest_first else "DESC"
        n = len(params)
        rows = await self._p.fetch(
            f"SELECT r.idx, r.leaf_hash, r.body FROM records r WHERE {where}"
            f" ORDER BY r.idx {order} LIMIT ${n + 1} OFFSET ${n + 2}",
            *params,
            limit,
            offset,
        )
        return [(int(r["idx"]), bytes(r["leaf_hash"]), bytes(r["body"])) for r in rows]

    async def _store_totals(
        self, school: str, since: datetime | None, until: datetime | None, bucket: Bucket
    ) -> list[dict[str, Any]]:
        where, params = RecordFilter(school=school, since=since, until=until).where(_placeholder)
        unit = "day" if bucket == "day" else "hour"
        rows = await self._p.fetch(
            f"""
            SELECT date_trunc('{unit}', r.at, 'UTC') AS bucket, r.peer_oin, r.data_service,
                   COUNT(*) FILTER (WHERE r.kind = 'decision') AS exchanges,
                   COUNT(*) FILTER (WHERE r.kind = 'decision' AND r.decision = 'allowed') AS allowed,
                   COUNT(*) FILTER (WHERE r.kind = 'decision' AND r.decision = 'denied') AS denied,
                   COALESCE(SUM(r.records) FILTER (WHERE r.kind = 'outcome'), 0) AS records,
                   COALESCE(SUM(r.bytes_out) FILTER (WHERE r.kind = 'outcome'), 0) AS bytes_out
            FROM records r WHERE {where}
            GROUP BY 1, 2, 3 ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST
            """,
            *params,
        )
        return [
            {
                "bucket": r["bucket"],
                "counterparty": r["peer_oin"],
                "data_service": r["data_service"],
                "exchanges": int(r["exchanges"]),
                "allowed": int(r["allowed"]),
                "denied": int(r["denied"]),
                "records": int(r["records"]),
                "bytes_out": int(r["bytes_out"]),
            }
            for r in rows
        ]

    async def _store_prune(self, older_than: datetime) -> int:
        async with self._p.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM record_students WHERE idx IN (SELECT idx FROM records WHERE at < $1)", older_than
            )
            status = await conn.execute("DELETE FROM records WHERE at < $1", older_than)
        return int(status.split()[-1])
