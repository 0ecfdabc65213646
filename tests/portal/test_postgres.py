"""The portal reads the PostgreSQL log store the same way as the SQLite one: scoped lists, student look-up,
and exports that verify offline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connectors.logstore.export import verify_export
from connectors.samples.federation import OTHER_SCHOOL, SCHOOL, Federation
from gateway.demo import eck_id
from tests.databases import postgres_database
from tests.portal.client import PortalClient
from tests.portal.conftest import PASSWORD, USER, push
from trust.checkpoint import load_public_key

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with postgres_database() as dsn:
        fed = Federation(tmp_path / "fed", log_dsn=dsn)
        try:
            await fed.start()
            await fed.activate_demo_schools()
            yield fed
        finally:
            await fed.close()


async def test_the_portal_over_postgresql_shows_scoped_records_and_exports_that_verify(pg_fed: Federation):
    for n in (1, 2):
        await push(pg_fed, SCHOOL, n)
    await PortalClient.portal_of(pg_fed).accounts.add(school=SCHOOL, email=USER, password=PASSWORD)
    client = PortalClient(pg_fed)
    try:
        await client.login(USER, PASSWORD)
        page = await client.get("/portal/exchanges")
        assert page.text.count("data-index=") == 4
        assert (await client.get("/portal/exchanges", school=OTHER_SCHOOL)).status == 403
        found = await client.post("/portal/student", {"csrf": await client.csrf(), "eck_id": eck_id(2)})
        assert found.text.count("data-index=") == 2
        export = (await client.get("/portal/export.json")).json()
        key = load_public_key((await client.get("/log/v1/public-key")).text.encode())
        assert verify_export(export, key) == [] and len(export["records"]) == 4
    finally:
        await client.close()
