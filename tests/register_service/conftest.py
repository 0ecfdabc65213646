"""Fixtures for the register service: a store on SQLite or a fresh PostgreSQL database, the operator key,
a development PKI, and the service running on a real port (HTTPS by default)."""

from __future__ import annotations

import contextlib
import secrets
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric import ec
from register_fixtures import OIN_PUBLISHER, REDIS_URL, Clock, RunningService

from tests.databases import postgres_database
from trust.pki import Issued, create_ca, issue_participant, issue_server
from trust.register_service.server import MAX_CONNECTIONS, SEND_TIMEOUT
from trust.register_service.store import RegisterStore
from trust.snapshot import PrivateKey


@pytest.fixture(scope="session")
def pki() -> Issued:
    return create_ca("edugate register test CA")


@pytest.fixture(scope="session")
def server_tls(pki: Issued) -> Issued:
    return issue_server(pki, ("127.0.0.1", "localhost"))


@pytest.fixture(scope="session")
def client_ssl(pki: Issued) -> ssl.SSLContext:
    """What a node uses to verify the register service's TLS certificate."""
    context = ssl.create_default_context(cadata=pki.cert_pem().decode())
    return context


@pytest.fixture
def operator_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def publisher_pem(pki: Issued) -> str:
    return issue_participant(pki, oin=OIN_PUBLISHER, name="Uitgeverij Noord").cert_pem().decode()


@pytest.fixture
async def postgres_dsn() -> AsyncIterator[str]:
    async with postgres_database() as dsn:
        yield dsn


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> AsyncIterator[RegisterStore]:
    """The register store on each database it supports."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "postgresql":
            target: str | Path = await stack.enter_async_context(postgres_database())
        else:
            target = tmp_path / "register.sqlite"
        opened = await RegisterStore.open(target, clock=clock)
        stack.push_async_callback(opened.close)
        yield opened


@pytest.fixture
async def sqlite_store(tmp_path: Path, clock: Clock) -> AsyncIterator[RegisterStore]:
    opened = await RegisterStore.open(tmp_path / "register.sqlite", clock=clock)
    yield opened
    await opened.close()


@pytest.fixture
async def service_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[RunningService] = []

    async def make(store: RegisterStore, key: PrivateKey, *, tls: Issued | None = None,
                   send_timeout: float = SEND_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
                   **options: Any) -> RunningService:
        options.setdefault("heartbeat", 1.0)
        options.setdefault("secure_cookies", tls is not None)
        service = RunningService(store, key, tls, options, send_timeout=send_timeout,
                                 max_connections=max_connections)
        await service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        await service.stop()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"edugate-t-{secrets.token_hex(6)}"
    yield prefix
    client = aioredis.from_url(REDIS_URL)
    async for key in client.scan_iter(match=f"{prefix}:*"):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
async def redis_factory() -> AsyncIterator[Callable[[], aioredis.Redis]]:
    clients: list[aioredis.Redis] = []

    def make() -> aioredis.Redis:
        client = aioredis.from_url(REDIS_URL)
        clients.append(client)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(Exception):  # a test may have closed or broken it on purpose
            await client.aclose()
