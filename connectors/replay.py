"""Replay caches: remember each one-time identifier (a client assertion's `jti`) until it expires.

`first_use(key, expires_at)` answers True exactly once for a key while it is remembered. A key only needs
remembering until `expires_at` (the assertion's `exp` plus leeway): after that the assertion is refused for
being expired, so the cache forgets it. One node uses the in-process cache; several nodes share Redis, so
an assertion replayed to another node is refused as well.

Both fail closed: when the cache cannot remember a key, the caller refuses the assertion rather than risk
accepting a replay.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger("edugate.replay")


class ReplayCache(Protocol):
    async def first_use(self, key: str, expires_at: float, *, owner: str = "") -> bool:
        """True if `key` was not seen before (and is now remembered until `expires_at`, epoch seconds). `owner`
        (the client the key belongs to) is what a cache may hold each client's share of its room against."""
        ...


class ReplayCacheUnavailable(RuntimeError):
    """The replay cache could not remember the key; the caller must refuse (fail closed)."""


class ReplayCacheFull(ReplayCacheUnavailable):
    """No room for the key: the cache is full, or its owner holds the most live keys one owner may."""


def _share_full(owner: str, share: int) -> ReplayCacheFull:
    """The refusal of a key whose owner already holds its `share` of live keys (logged: a client this busy is news)."""
    log.warning("replay_cache_owner_full", owner=owner, max_per_owner=share)
    return ReplayCacheFull(f"{owner or 'this client'} has {share} unexpired assertions, the most one client may: "
                           "wait for them to expire")


class InProcessReplayCache:
    """A bounded in-memory replay cache for a single node.

    When `max_entries` live keys are remembered, a new key is refused (ReplayCacheFull) instead of evicting a
    live one: forgetting a live jti would let that assertion be replayed, whereas refusing a fresh one only makes
    its client retry once older entries expire (within an assertion lifetime, at most a few minutes). Only a
    flood of validly signed assertions can fill it, and one owner may hold no more than `max_per_owner` of it,
    so one certified client's flood cannot refuse every other client its tokens.
    """

    def __init__(self, max_entries: int = 100_000, *, max_per_owner: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._max_per_owner = max_per_owner if max_per_owner is not None else max(1, max_entries // 20)
        self._clock = clock
        self._expiry: dict[str, tuple[float, str]] = {}  # key -> (expires_at, owner)
        self._owners: Counter[str] = Counter()  # live keys per owner
        self._heap: list[tuple[float, str]] = []  # (expires_at, key): the next to expire on top

    def __len__(self) -> int:
        self._purge(self._clock())
        return len(self._expiry)

    async def first_use(self, key: str, expires_at: float, *, owner: str = "") -> bool:
        now = self._clock()
        self._purge(now)
        if key in self._expiry:
            return False
        if expires_at <= now:
            return True  # already past its expiry: nothing left to protect, so nothing to remember
        if len(self._expiry) >= self._max_entries:
            log.warning("replay_cache_full", max_entries=self._max_entries)
            raise ReplayCacheFull(f"the replay cache holds its {self._max_entries} unexpired assertions")
        if self._owners[owner] >= self._max_per_owner:
            raise _share_full(owner, self._max_per_owner)
        self._expiry[key] = (expires_at, owner)
        self._owners[owner] += 1
        heapq.heappush(self._heap, (expires_at, key))
        return True

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires_at, key = heapq.heappop(self._heap)
            held = self._expiry.get(key)
            if held is not None and held[0] == expires_at:
                del self._expiry[key]
                owner = held[1]
                self._owners[owner] -= 1
                if not self._owners[owner]:
                    del self._owners[owner]


# One first use, atomically in Redis: a replay is refused before a full share, as in the in-process cache. The
# owner's live keys are a sorted set scored by their expiry, pruned of the expired on each use and itself expiring
# with its longest-lived key, so an owner that stops leaves nothing behind.
#   KEYS: the replay key, the owner's set.  ARGV: the key's expiry (ms since the epoch), now (ms), the share.
#   Answers 1 (first use, remembered), 0 (a replay) or -1 (the owner's share is full; nothing remembered).
_FIRST_USE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local expires, now = tonumber(ARGV[1]), tonumber(ARGV[2])
if expires <= now then return 1 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
redis.call('SET', KEYS[1], '1', 'PXAT', expires)
redis.call('ZADD', KEYS[2], expires, KEYS[1])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], last[2])
return 1
"""


class RedisReplayCache:
    """A replay cache shared by all nodes: `SET <prefix>:replay:<key> 1 PXAT <ms>` unless it exists, and the key
    counted against its owner's share (`<prefix>:replay-owner:<owner>`), in one script so two nodes cannot both
    take a key or the last place of a share.

    Any Redis error raises ReplayCacheUnavailable; it never answers True without Redis having stored the key.
    """

    def __init__(self, redis: Redis, prefix: str = "edugate", *, max_per_owner: int = 5_000,
                 clock: Callable[[], float] = time.time) -> None:
        if max_per_owner < 1:
            raise ValueError("max_per_owner must be at least 1")
        self._redis = redis
        self._prefix = prefix
        self._max_per_owner = max_per_owner
        self._clock = clock
        self._script = redis.register_script(_FIRST_USE)

    def redis_key(self, key: str) -> str:
        return f"{self._prefix}:replay:{key}"

    def owner_key(self, owner: str) -> str:
        return f"{self._prefix}:replay-owner:{owner}"

    async def first_use(self, key: str, expires_at: float, *, owner: str = "") -> bool:
        # Milliseconds, as PXAT takes them: the expiry rounded up, so a key is never dropped early.
        at_ms, now_ms = math.ceil(expires_at * 1000), math.floor(self._clock() * 1000)
        try:
            answer = await self._script(
                keys=[self.redis_key(key), self.owner_key(owner)], args=[at_ms, now_ms, self._max_per_owner]
            )
        except RedisError as exc:
            raise ReplayCacheUnavailable(f"replay cache (Redis) unavailable: {exc}") from exc
        if answer == -1:
            raise _share_full(owner, self._max_per_owner)
        if answer not in (0, 1):
            raise ReplayCacheUnavailable(f"replay cache (Redis) answered {answer!r}, neither a first use nor a replay")
        return answer == 1
