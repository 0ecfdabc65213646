"""The activation store on real SQLite and PostgreSQL, and its cache kept honest across stores by real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from gateway.activation import (
    ActivationError,
    ActivationStatus,
    ActivationStore,
    NotFoundError,
    VersionRead,
    decide,
    open_activations,
)
from tests.school.conftest import DASHBOARD, PUBLISHER, SCHOOL, activate, agreement, node_config, postgres_database

LMG = "leermateriaalgebruik"


async def admitted(store: ActivationStore, school: str = SCHOOL, counterparty: str = PUBLISHER) -> bool:
    found = await store.lookup(school, LMG, counterparty)
    activation, _ = decide(found, datetime.now(UTC), data_class="IV")
    return activation is not None


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ActivationStore]:
    if request.param == "sqlite":
        store = await open_activations(node_config(tmp_path), redis=None)
        try:
            yield store
        finally:
            await store.close()
        return
    async with postgres_database() as dsn:
        store = await open_activations(
            node_config(tmp_path, activation={"store": "postgresql", "dsn": dsn}), redis=None
        )
        try:
            yield store
        finally:
            await store.close()


async def test_a_granted_activation_admits_and_a_revoked_one_refuses_on_the_next_lookup(
    any_store: ActivationStore,
) -> None:
    activation = await activate(any_store)
    assert await admitted(any_store)
    await any_store.revoke(activation.id, school=SCHOOL, reason="contract ended")
    assert not await admitted(any_store)
    _, reason = decide(await any_store.lookup(SCHOOL, LMG, PUBLISHER), datetime.now(UTC), data_class="IV")
    assert "revoked" in reason


async def test_a_request_admits_nothing_until_the_school_confirms_it(any_store: ActivationStore) -> None:
    requested = await any_store.request(
        school=SCHOOL, data_service=LMG, counterparty=PUBLISHER, purposes=["a", "d"], processing_agreement=agreement()
    )
    assert requested.status is ActivationStatus.REQUESTED
    assert not await admitted(any_store)
    confirmed = await any_store.confirm(requested.id, school=SCHOOL, purposes=["d"])
    assert confirmed.purposes == ("d",)
    assert await admitted(any_store)


async def test_a_confirmation_may_narrow_the_purposes_but_not_add_to_them(any_store: ActivationStore) -> None:
    requested = await any_store.request(school=SCHOOL, data_service=LMG, counterparty=PUBLISHER, purposes=["a"])
    with pytest.raises(ActivationError):
        await any_store.confirm(requested.id, school=SCHOOL, purposes=["a", "j"])


async def test_a_school_cannot_change_another_schools_activation(any_store: ActivationStore) -> None:
    activation = await activate(any_store)
    with pytest.raises(NotFoundError):
        await any_store.revoke(activation.id, school="22XY001")
    assert await admitted(any_store)


async def test_an_ended_activation_refuses_and_says_when_it_ended(any_store: ActivationStore) -> None:
    activation = await activate(any_store, valid_from=datetime.now(UTC) - timedelta(days=2))
    ended = await any_store.end(activation.id, school=SCHOOL, valid_until=datetime.now(UTC) - timedelta(seconds=1))
    assert ended.state(datetime.now(UTC)) == "ended"
    _, reason = decide(await any_store.lookup(SCHOOL, LMG, PUBLISHER), datetime.now(UTC), data_class="IV")
    assert "ended at" in reason


async def test_an_activation_that_has_not_started_yet_refuses(any_store: ActivationStore) -> None:
    await activate(any_store, valid_from=datetime.now(UTC) + timedelta(days=1))
    assert not await admitted(any_store)


async def test_class_iv_needs_a_processing_agreement_in_force(any_store: ActivationStore) -> None:
    await activate(any_store, processing_agreement=None)
    _, reason = decide(await any_store.lookup(SCHOOL, LMG, PUBLISHER), datetime.now(UTC), data_class="IV")
    assert "processing agreement" in reason
    found = await any_store.lookup(SCHOOL, LMG, PUBLISHER)
    assert decide(found, datetime.now(UTC), data_class="III")[0] is not None  # lower classes need none


async def test_known_schools_are_those_with_any_activation(any_store: ActivationStore) -> None:
    assert not await any_store.is_known_school(SCHOOL)
    await activate(any_store)
    assert await any_store.is_known_school(SCHOOL)


async def test_find_filters_by_school_counterparty_and_since(any_store: ActivationStore) -> None:
    first = await activate(any_store)
    await activate(any_store, counterparty=DASHBOARD)
    mark = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await any_store.revoke(first.id, school=SCHOOL)
    assert [a.counterparty for a in await any_store.find(school=SCHOOL)] == [DASHBOARD, PUBLISHER]
    assert [a.id for a in await any_store.find(counterparty=PUBLISHER)] == [first.id]
    changed = await any_store.find(school=SCHOOL, since=mark)
    assert [a.id for a in changed] == [first.id]
    assert changed[0].status is ActivationStatus.REVOKED


async def test_school_keys_are_stored_hashed_and_verify_only_with_the_whole_secret(any_store: ActivationStore) -> None:
    key = await any_store.create_school_key(SCHOOL, "application administrator")
    key_id, _, secret = key.partition(".")
    assert await any_store.school_for_key(key) == SCHOOL
    assert await any_store.school_for_key(f"{key_id}.{secret[:-1]}") is None
    assert await any_store.school_for_key(secret) is None
    rows = await any_store.backend.fetch("SELECT hash FROM school_keys")
    assert rows[0]["hash"].startswith("$argon2") and secret not in rows[0]["hash"]
    assert await any_store.revoke_school_key(key_id)
    assert await any_store.school_for_key(key) is None


async def test_a_change_by_another_process_on_the_same_sqlite_file_drops_the_cache(tmp_path: Path) -> None:
    node_store = await open_activations(node_config(tmp_path), redis=None)
    cli_store = await open_activations(node_config(tmp_path), redis=None)  # e.g. the CLI
    try:
        activation = await activate(cli_store)
        assert await admitted(node_store)
        await cli_store.revoke(activation.id, school=SCHOOL)
        assert not await admitted(node_store)
    finally:
        await node_store.close()
        await cli_store.close()


@pytest.mark.redis
@pytest.mark.postgres
async def test_a_revocation_refuses_the_very_next_lookup_on_another_node_through_redis(
    tmp_path: Path, postgres_dsn: str, redis_prefix: tuple[redis_asyncio.Redis, str]
) -> None:
    client, prefix = redis_prefix
    config = node_config(
        tmp_path,
        activation={"store": "postgresql", "dsn": postgres_dsn},
        redis={"url": "redis://127.0.0.1:6379/0", "prefix": prefix},
    )
    node_a = await open_activations(config, redis=client)
    node_b = await open_activations(config, redis=redis_asyncio.from_url("redis://127.0.0.1:6379/0"))
    try:
        activation = await activate(node_a)
        for _ in range(3):  # node B now answers from its cache
            assert await admitted(node_b)
        assert node_b._cache  # the lookups above were cached
        await node_a.revoke(activation.id, school=SCHOOL)
        assert not await admitted(node_b)  # no wait: the version read sees the revocation
    finally:
        await node_a.close()
        await node_b.close()
        await node_b.freshness.redis.aclose()


@pytest.mark.redis
async def test_a_revocation_during_a_stream_of_lookups_refuses_every_lookup_after_it(
    tmp_path: Path, redis_prefix: tuple[redis_asyncio.Redis, str]
) -> None:
    client, prefix = redis_prefix
    config = node_config(tmp_path, redis={"url": "redis://127.0.0.1:6379/0", "prefix": prefix})
    node_a = await open_activations(config, redis=client)
    node_b = await open_activations(config, redis=client)  # two nodes on one SQLite file, sharing Redis
    try:
        activation = await activate(node_a)
        revoked_at: float | None = None
        results: list[tuple[float, bool]] = []
        loop = asyncio.get_running_loop()

        async def stream() -> None:  # until well after the revocation (bounded)
            after = 0
            for _ in range(100_000):
                started = loop.time()
                results.append((started, await admitted(node_b)))
                after += revoked_at is not None
                if after >= 50:
                    return

        async def revoke_midway() -> None:
            nonlocal revoked_at
            await asyncio.sleep(0.02)
            await node_a.revoke(activation.id, school=SCHOOL)
            revoked_at = loop.time()

        await asyncio.gather(stream(), revoke_midway())
        assert revoked_at is not None
        assert any(ok for _, ok in results) and not all(ok for _, ok in results)
        assert not any(ok for started, ok in results if started > revoked_at)
    finally:
        await node_a.close()
        await node_b.close()


@pytest.mark.redis
async def test_an_unreachable_redis_costs_the_cache_not_correctness(tmp_path: Path) -> None:
    dead = redis_asyncio.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = await open_activations(node_config(tmp_path), redis=dead)
    try:
        activation = await store.backend.fetch("SELECT 1 AS one")
        assert activation == [{"one": 1}]
        assert not await admitted(store)  # the lookup still reads the store
    finally:
        await store.close()
        await dead.aclose()


class CountingFreshness:
    """The store's own freshness, counting its reads."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.reads = 0

    async def version(self) -> object | None:
        self.reads += 1
        return await self.inner.version()  # type: ignore[attr-defined, no-any-return]

    async def bump(self) -> None:
        await self.inner.bump()  # type: ignore[attr-defined]


async def test_one_exchange_reads_the_version_once_for_its_school_activation_and_purpose_lookups(
    tmp_path: Path,
) -> None:
    store = await open_activations(node_config(tmp_path), redis=None)
    counting = CountingFreshness(store.freshness)
    store.freshness = counting
    try:
        await activate(store)
        for _ in range(3):  # cached or not, each exchange reads once
            read = VersionRead()
            assert await store.is_known_school(SCHOOL, read=read)
            assert len(await store.lookup(SCHOOL, LMG, PUBLISHER, read=read)) == 1
            assert len(await store.lookup(SCHOOL, LMG, PUBLISHER, read=read)) == 1
        assert counting.reads == 3
        assert await store.is_known_school(SCHOOL)  # without a read: a read of its own, as before
        assert counting.reads == 4
    finally:
        await store.close()


async def test_an_exchange_sees_every_change_that_finished_before_its_first_lookup(tmp_path: Path) -> None:
    node_store = await open_activations(node_config(tmp_path), redis=None)
    cli_store = await open_activations(node_config(tmp_path), redis=None)
    try:
        activation = await activate(cli_store)
        warm = VersionRead()
        assert await node_store.is_known_school(SCHOOL, read=warm) and await admitted(node_store)  # cached
        await cli_store.revoke(activation.id, school=SCHOOL)
        read = VersionRead()
        assert await node_store.is_known_school(SCHOOL, read=read)
        found = await node_store.lookup(SCHOOL, LMG, PUBLISHER, read=read)
        _, reason = decide(found, datetime.now(UTC), data_class="IV")
        assert "revoked" in reason
    finally:
        await node_store.close()
        await cli_store.close()


async def test_an_exchange_whose_read_the_cache_has_moved_past_asks_the_store(tmp_path: Path) -> None:
    """An exchange that read version v1, while another exchange has since moved the cache to v2: its lookups are
    answered by the store itself (never from entries of another version), and leave the cache at v2."""
    node_store = await open_activations(node_config(tmp_path), redis=None)
    cli_store = await open_activations(node_config(tmp_path), redis=None)
    try:
        activation = await activate(cli_store)
        early = VersionRead()
        assert await node_store.is_known_school(SCHOOL, read=early)
        await cli_store.revoke(activation.id, school=SCHOOL)
        assert not await admitted(node_store)  # another exchange: reads v2, caches the revoked activation
        moved_to = node_store._cache_version
        assert moved_to != early.version
        found = await node_store.lookup(SCHOOL, LMG, PUBLISHER, read=early)
        assert found[0].status is ActivationStatus.REVOKED  # the store as it is, not a stale entry
        assert node_store._cache_version == moved_to
    finally:
        await node_store.close()
        await cli_store.close()


async def test_an_activation_stored_with_an_unpadded_year_1_before_the_fix_still_reads_back(
    store: ActivationStore,
) -> None:
    made = await activate(store)
    await store.backend.execute("UPDATE activations SET valid_from = $1 WHERE id = $2", "1-01-01T00:00:00.000000Z",
                                made.id)
    assert (await store.get(made.id)).valid_from == datetime(1, 1, 1, tzinfo=UTC)
