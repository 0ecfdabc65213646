"""The two databases the register service runs on, behind one small interface.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg) is for production. The store writes its
SQL once, with `?` placeholders; the PostgreSQL connection numbers them (`$1`, `$2`, ...).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg

Row = dict[str, Any]


class Connection(Protocol):
    async def execute(self, sql: str, *args: Any) -> None: ...
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...


class Database(Protocol):
    dialect: str  # "sqlite" or "postgresql"

    def transaction(self) -> Any:
        """An async context manager yielding a `Connection` inside one transaction."""
        ...

    async def close(self) -> None: ...


def is_postgres_dsn(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


async def open_database(target: str | Path) -> Database:
    """Open a SQLite file (any path) or a PostgreSQL DSN (`postgresql://...`)."""
    if isinstance(target, str) and is_postgres_dsn(target):
        return await PostgresDatabase.open(target)
    return await SqliteDatabase.open(Path(target))


class _SqliteConnection:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._conn.execute(sql, args) as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._conn.execute(sql, args) as cursor:
            row = await cursor.fetchone()
        return dict(row) if row is not None else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return next(iter(row.values())) if row else None


class SqliteDatabase:
    """One connection, one transaction at a time (an asyncio lock), WAL so readers in other processes go on."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA busy_timeout=10000")  # the CLI may write while the service runs
        await conn.execute("PRAGMA foreign_keys=ON")
        return cls(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            if self._conn.in_transaction:  # a task cancelled mid-way (a closed feed) left one open
                await self._conn.execute("ROLLBACK")
            try:
                # IMMEDIATE takes the write lock up front: serial bumps never interleave across processes.
                await self._conn.execute("BEGIN IMMEDIATE")
                yield _SqliteConnection(self._conn)
            except BaseException:
                if self._conn.in_transaction:
                    await asyncio.shield(self._conn.execute("ROLLBACK"))
                raise
            await self._conn.execute("COMMIT")

    async def close(self) -> None:
        await self._conn.close()


_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class _PostgresConnection:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(_numbered(sql), *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(row) for row in await self._conn.fetch(_numbered(sql), *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = await self._conn.fetchrow(_numbered(sql), *args)
        return dict(row) if row is not None else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(_numbered(sql), *args)


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self.dsn = dsn

    @classmethod
    async def open(cls, dsn: str) -> PostgresDatabase:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        return cls(pool, dsn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PostgresConnection(conn)

    async def listen(self, channel: str, callback: Callable[[], None]) -> Callable[[], Any]:
        """Call `callback` on every NOTIFY on `channel` (changes made by other processes). Returns a closer."""
        conn = await asyncpg.connect(self.dsn)
        await conn.add_listener(channel, lambda *_: callback())

        async def stop() -> None:
            await conn.close()

        return stop

    async def close(self) -> None:
        await self._pool.close()
