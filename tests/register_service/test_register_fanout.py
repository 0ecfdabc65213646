"""Several nodes, one feed: Redis carries verified snapshots from the node that holds the feed to the rest,
which verify each one themselves. Real Redis, a key prefix per test."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from register_fixtures import OIN_DASHBOARD, OIN_PUBLISHER, seed
from test_register_source import document, tampered, wait_until

from connectors.register_source import RegisterSource
from trust.register import ParticipantStatus, RegisterHolder
from trust.register_service.store import RegisterStore
from trust.snapshot import PrivateKey, sign_snapshot

pytestmark = pytest.mark.redis


@pytest.fixture
async def nodes() -> AsyncIterator[list[RegisterSource]]:
    started: list[RegisterSource] = []
    yield started
    for source in started:
        await source.close()


async def test_one_node_holds_the_feed_and_redis_brings_each_change_to_the_others(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any],
        redis_factory: Callable[[], aioredis.Redis], redis_prefix: str, nodes: list[RegisterSource]) -> None:
    await seed(sqlite_store)
    service = await service_factory(sqlite_store, operator_key)
    holders = [RegisterHolder(max_staleness=30) for _ in range(3)]
    for holder in holders:
        node = RegisterSource(holder, source=service.url, operator_key=operator_key.public_key(), poll_interval=60,
                              redis=redis_factory(), redis_prefix=redis_prefix, lock_ttl=1.0)
        nodes.append(node)
        await node.start()
    await wait_until(lambda: sum(n.state.feed_connected for n in nodes) == 1)
    assert sum(n.state.leader for n in nodes) == 1

    changed = await sqlite_store.set_participant_status(OIN_PUBLISHER, ParticipantStatus.SUSPENDED,
                                                       reason="breach", actor="alice")
    elapsed = await wait_until(lambda: all(h.serial == changed for h in holders), within=1.0)
    print(f"\nfan-out: all 3 nodes at serial {changed} {elapsed * 1000:.1f} ms after the change (1 feed, polls 60 s)")
    assert sum(n.state.feed_connected for n in nodes) == 1  # still one subscription for the deployment


async def test_another_node_takes_the_feed_over_when_the_holder_dies(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any],
        redis_factory: Callable[[], aioredis.Redis], redis_prefix: str, nodes: list[RegisterSource]) -> None:
    await seed(sqlite_store)
    service = await service_factory(sqlite_store, operator_key)
    holders = [RegisterHolder(max_staleness=30) for _ in range(2)]
    for holder in holders:
        node = RegisterSource(holder, source=service.url, operator_key=operator_key.public_key(), poll_interval=60,
                              redis=redis_factory(), redis_prefix=redis_prefix, lock_ttl=0.6)
        nodes.append(node)
        await node.start()
    await wait_until(lambda: sum(n.state.feed_connected for n in nodes) == 1)
    leader = next(n for n in nodes if n.state.leader)
    survivor = next(n for n in nodes if n is not leader)

    # The holder dies without letting go: its tasks stop, its lock is left to expire.
    for task in leader._tasks:
        task.cancel()
    if leader._feed_task:
        leader._feed_task.cancel()
    await asyncio.gather(*leader._tasks, return_exceptions=True)
    await leader.redis.set(f"{redis_prefix}:register:feed-leader", "dead-node", px=600)  # type: ignore[union-attr]

    took = await wait_until(lambda: survivor.state.feed_connected, within=3.0)
    print(f"\nfeed taken over {took:.2f} s after the holder died (lock TTL 0.6 s)")
    changed = await sqlite_store.set_participant_status(OIN_DASHBOARD, ParticipantStatus.SUSPENDED, reason="x",
                                                       actor="alice")
    await wait_until(lambda: survivor.holder.serial == changed, within=1.0)


async def test_snapshots_from_redis_are_verified_by_every_node(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any],
        redis_factory: Callable[[], aioredis.Redis], redis_prefix: str, nodes: list[RegisterSource]) -> None:
    serial = await seed(sqlite_store)
    service = await service_factory(sqlite_store, operator_key)
    holder = RegisterHolder(max_staleness=30)
    node = RegisterSource(holder, source=service.url, operator_key=operator_key.public_key(), poll_interval=60,
                          feed=False, redis=redis_factory(), redis_prefix=redis_prefix)
    nodes.append(node)
    await node.start()
    assert holder.serial == serial

    attacker = redis_factory()  # whoever can write to Redis cannot write the register
    await attacker.publish(f"{redis_prefix}:register:snapshots", tampered(sign_snapshot(document(serial + 5),
                                                                                         operator_key)))
    await wait_until(lambda: node.state.refused == 1)
    assert holder.serial == serial


async def test_a_restarted_node_catches_up_from_redis_but_waits_for_the_register_to_count_as_fresh(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any],
        redis_factory: Callable[[], aioredis.Redis], redis_prefix: str, nodes: list[RegisterSource]) -> None:
    await seed(sqlite_store)
    service = await service_factory(sqlite_store, operator_key)
    first = RegisterSource(RegisterHolder(max_staleness=30), source=service.url,
                           operator_key=operator_key.public_key(), poll_interval=60, redis=redis_factory(),
                           redis_prefix=redis_prefix, lock_ttl=1.0)
    nodes.append(first)
    await first.start()
    changed = await sqlite_store.set_participant_status(OIN_PUBLISHER, ParticipantStatus.SUSPENDED, reason="x",
                                                       actor="alice")
    await wait_until(lambda: first.holder.serial == changed)

    # The register goes down; a node (re)starts now.
    await service.stop()
    holder = RegisterHolder(max_staleness=30)
    restarted = RegisterSource(holder, source=service.url, operator_key=operator_key.public_key(),
                               poll_interval=0.1, redis=redis_factory(), redis_prefix=redis_prefix, lock_ttl=1.0,
                               max_backoff=0.2)
    nodes.append(restarted)
    await restarted.start()
    assert holder.serial == changed  # caught up from the snapshot kept in Redis
    refusal = holder.register.participant(OIN_PUBLISHER).refusal(datetime.now(UTC))  # type: ignore[union-attr]
    assert refusal is not None
    assert not holder.fresh()  # but Redis is not the register: no contact yet, still failing closed

    await service.start()
    await wait_until(holder.fresh, within=3.0)


async def test_revocation_reaches_every_node_within_a_second(
        store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any],
        redis_factory: Callable[[], aioredis.Redis], redis_prefix: str, nodes: list[RegisterSource]) -> None:
    """From the operator's change to every node's holder refusing the participant: two nodes sharing Redis
    (one feed) and one node on its own feed, with 60 s polls so only the live paths count."""
    await seed(store)
    service = await service_factory(store, operator_key)
    for index in range(3):
        shared = index < 2
        node = RegisterSource(RegisterHolder(max_staleness=60), source=service.url,
                              operator_key=operator_key.public_key(), poll_interval=60,
                              redis=redis_factory() if shared else None, redis_prefix=redis_prefix, lock_ttl=2.0)
        nodes.append(node)
        await node.start()
    await wait_until(lambda: sum(n.state.feed_connected for n in nodes) == 2)

    latencies = []
    for round_ in range(10):
        status = ParticipantStatus.SUSPENDED if round_ % 2 == 0 else ParticipantStatus.ACTIVE
        start = time.perf_counter()
        serial = await store.set_participant_status(OIN_PUBLISHER, status, reason="revocation drill", actor="alice")
        await wait_until(lambda s=serial: all(n.holder.serial >= s for n in nodes), within=2.0)  # type: ignore[misc]
        latencies.append(time.perf_counter() - start)
        refused = [n.holder.register.participant(OIN_PUBLISHER).refusal(datetime.now(UTC))  # type: ignore[union-attr]
                   for n in nodes]
        assert all((r is not None) == (status is ParticipantStatus.SUSPENDED) for r in refused)
    print(f"\nrevocation latency ({store.db.dialect}, 3 nodes, 2 via Redis): median "
          f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms over 10 changes")
    assert max(latencies) <= 1.0


async def test_without_redis_a_node_follows_the_feed_itself_so_revocations_still_arrive_at_once(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any],
        redis_prefix: str, nodes: list[RegisterSource]) -> None:
    await seed(sqlite_store)
    service = await service_factory(sqlite_store, operator_key)
    unreachable = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)  # nothing listens there
    holder = RegisterHolder(max_staleness=30)
    node = RegisterSource(holder, source=service.url, operator_key=operator_key.public_key(), poll_interval=60,
                          redis=unreachable, redis_prefix=redis_prefix, lock_ttl=0.6)
    nodes.append(node)
    await node.start()
    await wait_until(lambda: node.state.feed_connected, within=3.0)
    assert not node.state.leader

    changed = await sqlite_store.set_participant_status(OIN_PUBLISHER, ParticipantStatus.SUSPENDED, reason="x",
                                                       actor="alice")
    await wait_until(lambda: holder.serial == changed, within=1.0)
    await unreachable.aclose()
