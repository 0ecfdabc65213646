"""Replay caches say 'first use' exactly once per key while it is live, and fail closed."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from connectors.replay import InProcessReplayCache, RedisReplayCache, ReplayCacheFull, ReplayCacheUnavailable


class Clock:
    """A clock the test moves by hand, so expiry is exact rather than slept for."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- in-process -------------------------------------------------------------------------------------------------


async def test_a_key_is_a_first_use_once_and_a_replay_afterwards() -> None:
    cache = InProcessReplayCache(clock=Clock())
    assert await cache.first_use("assertion:app:1", 1_800_000_060)
    assert not await cache.first_use("assertion:app:1", 1_800_000_060)
    assert await cache.first_use("assertion:app:2", 1_800_000_060)


async def test_a_key_is_forgotten_only_when_it_expires() -> None:
    clock = Clock()
    cache = InProcessReplayCache(clock=clock)
    await cache.first_use("k", 1_800_000_060)
    clock.now = 1_800_000_059.9
    assert not await cache.first_use("k", 1_800_000_120)
    clock.now = 1_800_000_060
    assert await cache.first_use("k", 1_800_000_120)
    assert len(cache) == 1


async def test_a_key_already_past_its_expiry_is_not_remembered() -> None:
    cache = InProcessReplayCache(clock=Clock())
    assert await cache.first_use("stale", 1_799_999_999)
    assert len(cache) == 0


async def test_a_full_cache_refuses_new_keys_rather_than_forget_live_ones() -> None:
    clock = Clock()
    cache = InProcessReplayCache(max_entries=2, max_per_owner=2, clock=clock)
    assert await cache.first_use("a", 1_800_000_010)
    assert await cache.first_use("b", 1_800_000_020)
    with pytest.raises(ReplayCacheFull, match="holds its 2 unexpired"):
        await cache.first_use("c", 1_800_000_030)  # full: refused, not evicting a or b
    assert not await cache.first_use("a", 1_800_000_010)  # and a is still known as used
    clock.now = 1_800_000_010  # a expires, making room
    assert await cache.first_use("c", 1_800_000_030)
    assert not await cache.first_use("b", 1_800_000_020)


async def test_the_in_process_cache_holds_no_more_than_its_bound() -> None:
    clock = Clock()
    cache = InProcessReplayCache(max_entries=100, clock=clock)
    accepted = 0
    for i in range(150):
        with contextlib.suppress(ReplayCacheFull):
            accepted += await cache.first_use(f"k{i}", clock.now + 60, owner=f"client-{i % 30}")
    assert accepted == 100 and len(cache) == 100


async def test_one_client_holds_no_more_than_its_share_and_cannot_refuse_the_others_their_tokens() -> None:
    clock = Clock()
    cache = InProcessReplayCache(max_entries=100, clock=clock)  # a share of 100 // 20 = 5
    for i in range(5):
        assert await cache.first_use(f"assertion:flood:{i}", clock.now + 60, owner="flood")
    with pytest.raises(ReplayCacheFull, match="flood has 5 unexpired assertions, the most one client may"):
        await cache.first_use("assertion:flood:5", clock.now + 60, owner="flood")
    assert await cache.first_use("assertion:other:1", clock.now + 60, owner="other")
    clock.now += 60  # the flood's assertions expire, and its share with them
    assert await cache.first_use("assertion:flood:6", clock.now + 60, owner="flood")


# --- Redis (the real server on 127.0.0.1:6379) -----------------------------------------------------------------


@pytest.fixture
async def redis_client() -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis(host="127.0.0.1", port=6379)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: redis_asyncio.Redis) -> AsyncIterator[str]:
    value = f"edugate-test-{secrets.token_hex(6)}"
    yield value
    async for key in redis_client.scan_iter(match=f"{value}:*"):
        await redis_client.delete(key)


@pytest.mark.redis
async def test_redis_says_first_use_once(redis_client: redis_asyncio.Redis, prefix: str) -> None:
    cache = RedisReplayCache(redis_client, prefix=prefix)
    assert await cache.first_use("assertion:app:1", time.time() + 60)
    assert not await cache.first_use("assertion:app:1", time.time() + 60)
    assert await cache.first_use("assertion:app:2", time.time() + 60)


@pytest.mark.redis
async def test_redis_keeps_a_key_exactly_until_its_expiry(redis_client: redis_asyncio.Redis, prefix: str) -> None:
    cache = RedisReplayCache(redis_client, prefix=prefix)
    expires_at = time.time() + 60
    await cache.first_use("k", expires_at)
    remaining_ms = await redis_client.pttl(cache.redis_key("k"))
    # PXAT takes the expiry rounded up to the next millisecond, and Redis reads its clock in whole milliseconds
    assert 0 < remaining_ms <= 60_001
    assert abs((time.time() + remaining_ms / 1000) - expires_at) < 1


@pytest.mark.redis
async def test_redis_forgets_a_key_after_it_expires(redis_client: redis_asyncio.Redis, prefix: str) -> None:
    cache = RedisReplayCache(redis_client, prefix=prefix)
    assert await cache.first_use("k", time.time() + 0.2)
    assert not await cache.first_use("k", time.time() + 0.2)
    await asyncio.sleep(0.35)
    assert await cache.first_use("k", time.time() + 60)


@pytest.mark.redis
async def test_nodes_sharing_redis_share_the_replay_cache(redis_client: redis_asyncio.Redis, prefix: str) -> None:
    other_client = redis_asyncio.Redis(host="127.0.0.1", port=6379)
    try:
        node_a = RedisReplayCache(redis_client, prefix=prefix)
        node_b = RedisReplayCache(other_client, prefix=prefix)
        assert await node_a.first_use("k", time.time() + 60)
        assert not await node_b.first_use("k", time.time() + 60)
    finally:
        await other_client.aclose()


@pytest.mark.redis
async def test_concurrent_uses_of_one_key_let_exactly_one_through(
    redis_client: redis_asyncio.Redis, prefix: str
) -> None:
    cache = RedisReplayCache(redis_client, prefix=prefix)
    results = await asyncio.gather(*(cache.first_use("race", time.time() + 60) for _ in range(25)))
    assert results.count(True) == 1


@pytest.mark.redis
async def test_in_redis_one_client_holds_no_more_than_its_share_and_cannot_refuse_the_others_their_tokens(
    redis_client: redis_asyncio.Redis, prefix: str
) -> None:
    clock = Clock(time.time())
    cache = RedisReplayCache(redis_client, prefix=prefix, max_per_owner=3, clock=clock)
    for i in range(3):
        assert await cache.first_use(f"assertion:flood:{i}", clock.now + 60, owner="flood")
    with pytest.raises(ReplayCacheFull, match="flood has 3 unexpired assertions, the most one client may"):
        await cache.first_use("assertion:flood:3", clock.now + 60, owner="flood")
    assert await redis_client.exists(cache.redis_key("assertion:flood:3")) == 0  # refused, so not remembered
    assert not await cache.first_use("assertion:flood:0", clock.now + 60, owner="flood")  # a replay is a replay
    assert await cache.first_use("assertion:other:1", clock.now + 60, owner="other")
    clock.now += 60.001  # the flood's assertions expire (whole milliseconds, as Redis counts), and its share with them
    assert await cache.first_use("assertion:flood:4", clock.now + 60, owner="flood")


@pytest.mark.redis
async def test_nodes_sharing_redis_share_each_clients_share(redis_client: redis_asyncio.Redis, prefix: str) -> None:
    other_client = redis_asyncio.Redis(host="127.0.0.1", port=6379)
    try:
        nodes = [RedisReplayCache(client, prefix=prefix, max_per_owner=5) for client in (redis_client, other_client)]
        uses = [nodes[i % 2].first_use(f"assertion:flood:{i}", time.time() + 60, owner="flood") for i in range(24)]
        results = await asyncio.gather(*uses, return_exceptions=True)
    finally:
        await other_client.aclose()
    assert results.count(True) == 5
    assert sum(isinstance(result, ReplayCacheFull) for result in results) == 19


@pytest.mark.redis
async def test_a_clients_count_in_redis_expires_with_its_last_assertion(
    redis_client: redis_asyncio.Redis, prefix: str
) -> None:
    cache = RedisReplayCache(redis_client, prefix=prefix)
    assert await cache.first_use("assertion:app:1", time.time() + 30, owner="app")
    assert await cache.first_use("assertion:app:2", time.time() + 60, owner="app")
    remaining_ms = await redis_client.pttl(cache.owner_key("app"))
    assert 59_000 < remaining_ms <= 60_001  # nothing is left of a client that stops


@pytest.mark.redis
async def test_different_prefixes_do_not_see_each_others_keys(redis_client: redis_asyncio.Redis, prefix: str) -> None:
    assert await RedisReplayCache(redis_client, prefix=prefix).first_use("k", time.time() + 60)
    assert await RedisReplayCache(redis_client, prefix=f"{prefix}:other").first_use("k", time.time() + 60)


@pytest.mark.redis
async def test_a_key_already_past_its_expiry_is_accepted_and_not_kept(
    redis_client: redis_asyncio.Redis, prefix: str
) -> None:
    cache = RedisReplayCache(redis_client, prefix=prefix)
    assert await cache.first_use("stale", time.time() - 10)
    assert await redis_client.exists(cache.redis_key("stale")) == 0


async def test_an_unreachable_redis_raises_instead_of_answering() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = redis_asyncio.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(ReplayCacheUnavailable, match="Redis"):
            await RedisReplayCache(client).first_use("k", time.time() + 60)
    finally:
        await client.aclose()
