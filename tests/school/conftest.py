"""Shared pieces for the school-control tests: the real catalogue and purposes, activation stores on real SQLite,
PostgreSQL and Redis, and exchanges built from real aiohttp requests."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis_asyncio
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from gateway.activation import ActivationStore, ProcessingAgreement, open_activations
from gateway.catalogue import Catalogue, load_catalogue
from gateway.config import NodeConfig
from gateway.exchange import Exchange
from gateway.pseudonyms import Pseudonyms
from gateway.purposes import Purposes, load_purposes
from tests.databases import postgres_database
from trust.certificates import PeerIdentity
from trust.tokens import AccessToken

ROOT = Path(__file__).resolve().parents[2]
SCHOOL = "104A158"
OTHER_SCHOOL = "22XY001"
PUBLISHER = "00000003123456780000"
DASHBOARD = "00000003876543210000"
STRANGER = "00000003555555550000"
ECK_ID = "https://ketenid.nl/201703/" + "a1" * 64
OTHER_ECK_ID = "https://ketenid.nl/201703/" + "0f" * 64


def node_config(tmp_path: Path, **sections: Any) -> NodeConfig:
    raw: dict[str, Any] = {
        "node": {"name": "test", "oin": DASHBOARD, "public_url": "https://dashboard.test", "state_dir": str(tmp_path)},
        "tls": {"certificate": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem")},
        "register": {"source": str(tmp_path / "register.json"), "operator_key": str(tmp_path / "operator.pem")},
        "catalogue": str(ROOT / "config" / "catalogue.toml"),
        "purposes": str(ROOT / "config" / "purposes.toml"),
    }
    raw.update(sections)
    return NodeConfig.model_validate(raw)


@dataclass
class CheckNode:
    """What the school-control checks read from a node: config, catalogue, activations, purposes, pseudonyms."""

    config: NodeConfig
    catalogue: Catalogue
    activations: ActivationStore
    purposes: Purposes
    pseudonyms: Pseudonyms | None = None


@pytest.fixture
def catalogue() -> Catalogue:
    return load_catalogue(ROOT / "config" / "catalogue.toml")


@pytest.fixture
def purposes() -> Purposes:
    return load_purposes(ROOT / "config" / "purposes.toml")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ActivationStore]:
    """A SQLite store, as a node without Redis opens it."""
    activations = await open_activations(node_config(tmp_path), redis=None)
    try:
        yield activations
    finally:
        await activations.close()


@pytest.fixture
async def node(tmp_path: Path, catalogue: Catalogue, purposes: Purposes, store: ActivationStore) -> CheckNode:
    return CheckNode(node_config(tmp_path), catalogue, store, purposes, Pseudonyms(secrets.token_bytes(32)))


@pytest.fixture
async def postgres_dsn() -> AsyncIterator[str]:
    """A database of its own on the real PostgreSQL, dropped afterwards."""
    async with postgres_database() as dsn:
        yield dsn


@pytest.fixture
async def redis_prefix() -> AsyncIterator[tuple[redis_asyncio.Redis, str]]:
    """The real Redis with a key prefix of this test's own, cleaned afterwards."""
    client = redis_asyncio.from_url("redis://127.0.0.1:6379/0")
    prefix = f"edugate-test-{secrets.token_hex(6)}"
    try:
        yield client, prefix
    finally:
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def agreement(days: int = 365) -> ProcessingAgreement:
    now = datetime.now(UTC)
    return ProcessingAgreement(
        reference="VO-2026-0042", valid_from=now - timedelta(days=1), valid_until=now + timedelta(days=days)
    )


async def activate(
    store: ActivationStore,
    *,
    school: str = SCHOOL,
    data_service: str = "leermateriaalgebruik",
    counterparty: str = PUBLISHER,
    purposes: tuple[str, ...] = ("a", "b", "d", "j"),
    **kwargs: Any,
) -> Any:
    kwargs.setdefault("processing_agreement", agreement())
    return await store.grant(
        school=school, data_service=data_service, counterparty=counterparty, purposes=purposes, **kwargs
    )


def progress(**changes: Any) -> dict[str, Any]:
    """A Progress API body (Leermateriaalgebruik), as a publisher sends it."""
    body: dict[str, Any] = {
        "id": "0b6f3a52-8f0e-4a4c-9d43-5a1f2f1f6b11",
        "student": {"id": ECK_ID},
        "school": {"organisationMasterIdentifier": SCHOOL},
        "assignableUnitId": "unit-7",
        "courseId": "rekenen-groep-6",
        "status": "completed",
        "pleaseFollowUp": False,
        "additionalInfo": "Lesson 7 done in one go",
        "detailUrl": "https://publisher.test/progress/0b6f3a52",
    }
    body.update(changes)
    return body


ExchangeFactory = Callable[..., Exchange]


@pytest.fixture
def exchange(catalogue: Catalogue) -> ExchangeFactory:
    """An Exchange around a real aiohttp request, as the pipeline hands it to the school-control checks."""

    def make(
        service: str = "leermateriaalgebruik",
        *,
        method: str | None = None,
        path: str | None = None,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        scopes: set[str] | None = None,
        token_purposes: set[str] | None = None,
        caller: str = PUBLISHER,
        path_params: dict[str, str] | None = None,
    ) -> Exchange:
        entry = catalogue.services[service]
        route = entry.routes[0]
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        reader = StreamReader(BaseProtocol(asyncio.get_running_loop()), 2**16, loop=asyncio.get_running_loop())
        if data:
            reader.feed_data(data)
        reader.feed_eof()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if data:
            all_headers["Content-Length"] = str(len(data))
        request = make_mocked_request(
            method or route.method, path or route.path.replace("{id}", "p-1"), headers=all_headers, payload=reader
        )
        now = datetime.now(UTC)
        x = Exchange(request=request, now=now)
        x.service = entry
        x.route = route
        x.path_params = path_params or {}
        x.peer = PeerIdentity(
            oin=caller,
            thumbprint="t",
            subject=f"serialNumber={caller}",
            not_before=now,
            not_after=now + timedelta(days=1),
        )
        x.token = AccessToken(
            client_id="client-1",
            oin=caller,
            scopes=frozenset(scopes or {entry.scope}),
            purposes=frozenset(token_purposes if token_purposes is not None else {"a"}),
            thumbprint="t",
            jti=secrets.token_hex(8),
            issued_at=0,
            expires_at=0,
        )
        return x

    return make
