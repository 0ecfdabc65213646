"""Where activations are kept: SQLite (aiosqlite, the embedded default) or PostgreSQL (asyncpg).

Both speak the same SQL, written with `$n` placeholders (asyncpg's); SQLite gets them as `?` (each statement uses
its placeholders once, in order). Times are stored as fixed-width RFC 3339 UTC text so that they sort as text.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS activations (
        id TEXT PRIMARY KEY,
        school TEXT NOT NULL,
        data_service TEXT NOT NULL,
        counterparty TEXT NOT NULL,
        purposes TEXT NOT NULL,
        status TEXT NOT NULL,
        valid_from TEXT NOT NULL,
        valid_until TEXT,
        agreement_reference TEXT,
        agreement_valid_from TEXT,
        agreement_valid_until TEXT,
        requested_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        revoked_at TEXT,
        revoked_reason TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS activations_key ON activations (school, data_service, counterparty)",
    "CREATE INDEX IF NOT EXISTS activations_counterparty ON activations (counterparty, updated_at)",
    """CREATE TABLE IF NOT EXISTS school_keys (
        key_id TEXT PRIMARY KEY,
        school TEXT NOT NULL,
        hash TEXT NOT NULL,
        label TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )""",
)

_PLACEHOLDER = re.compile(r"\$\d+")


def to_text(value: datetime | None) -> str | None:
    # isoformat, not strftime: strftime writes the year 1 as "1", which from_text cannot read back (and which sorts
    # after "2026"); for the years 1000 to 9999 both write the same text.
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def from_text(value: str | None) -> datetime | None:
    if value is None:
        return None
    year, dash, rest = value.partition("-")  # rows to_text wrote with strftime hold the years 1-999 unpadded
    return datetime.strptime(year.zfill(4) + dash + rest, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class Backend(Protocol):
    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a change; returns the number of rows it touched."""
        ...

    async def close(self) -> None: ...


class SqliteBackend:
    """One connection (aiosqlite runs it on its own thread); WAL so readers in other processes are not blocked."""

    def __init__(self, connection: aiosqlite.Connection, probe: sqlite3.Connection) -> None:
        self.connection = connection
        self.connection.row_factory = aiosqlite.Row
        self.own_changes = 0  # SQLite's data_version does not move for this connection's own commits
        # A second, plain connection only for `PRAGMA data_version`: asked on the event loop itself, because it
        # costs microseconds while a round trip to aiosqlite's thread costs far more on every exchange.
        self._probe = probe
        self._probe_cursor = probe.cursor()  # one cursor for every read: making one costs a third of the read

    @classmethod
    async def open(cls, path: Path) -> SqliteBackend:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA busy_timeout=5000")
        for statement in SCHEMA:
            await connection.execute(statement)
        await connection.commit()
        return cls(connection, sqlite3.connect(path, check_same_thread=False))

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self.connection.execute(_PLACEHOLDER.sub("?", sql), args) as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.connection.execute(_PLACEHOLDER.sub("?", sql), args) as cursor:
            count = cursor.rowcount
        await self.connection.commit()
        self.own_changes += 1
        return count

    async def data_version(self) -> int:
        """Moves whenever another connection (this node's writer, the CLI, another process) commits."""
        row = self._probe_cursor.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    async def close(self) -> None:
        self._probe.close()
        await self.connection.close()


class PostgresBackend:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, dsn: str) -> PostgresBackend:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        # Several nodes may start at once against one database: one creates the schema at a time.
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(4004)")
            for statement in SCHEMA:
                await connection.execute(statement)
        return cls(pool)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(sql, *args)
        return [dict(row) for row in rows]

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self.pool.execute(sql, *args)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def close(self) -> None:
        await self.pool.close()
