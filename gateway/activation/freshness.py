"""How a node knows its cached activations are still the ones in the store.

A revocation must refuse the next exchange on every node at once. Each change to the store bumps a version; a
lookup reads the version first (one Redis GET, or SQLite's `PRAGMA data_version`, both far cheaper than the query
they save) and drops its cache when it moved. Unlike a pub/sub message, which arrives some time after the
revocation returns, a version read cannot miss a change that finished before the lookup began.
"""

from __future__ import annotations

from typing import Protocol

from redis.asyncio import Redis

from gateway.activation.backend import SqliteBackend


class Freshness(Protocol):
    async def version(self) -> object | None:
        """The current version, or None when it cannot be known (then nothing is served from cache)."""
        ...

    async def bump(self) -> None:
        """Called after every committed change."""
        ...


class RedisFreshness:
    """Shared by every node (and the CLI, and the portal) that uses the same Redis and prefix."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.key = f"{prefix}:activations:version"

    async def version(self) -> object | None:
        try:
            return await self.redis.get(self.key) or b"0"
        except Exception:  # an unreachable Redis costs speed, never correctness: read the store
            return None

    async def bump(self) -> None:
        await self.redis.incr(self.key)


class SqliteFreshness:
    """One node without Redis: other processes' commits move `data_version`, this one's own count locally."""

    def __init__(self, backend: SqliteBackend) -> None:
        self.backend = backend

    async def version(self) -> object | None:
        return (await self.backend.data_version(), self.backend.own_changes)

    async def bump(self) -> None:
        return None  # the backend counts its own commits


class NoCache:
    """PostgreSQL without Redis: other writers cannot be seen cheaply, so every lookup reads the store."""

    async def version(self) -> object | None:
        return None

    async def bump(self) -> None:
        return None
