"""End to end over real mutual TLS: two gateway nodes of one deployment share their activations (PostgreSQL)
and Redis; a school revokes through the consent API on one node while a publisher streams progress through both,
and from that moment neither node forwards anything under the revoked activation."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from connectors.samples.federation import SCHOOL, Federation
from connectors.samples.publisher import ParticipantClient, progress_record
from gateway.demo import eck_id
from tests.school.conftest import postgres_database


@dataclass
class SharedActivations(Federation):
    """A Federation whose node keeps its activations in a PostgreSQL database shared with its siblings."""

    activation_dsn: str = ""

    def write_config(self, upstream: str) -> Path:
        path = super().write_config(upstream)
        section = f'\n[activation]\nstore = "postgresql"\ndsn = "{self.activation_dsn}"\n'
        path.write_text(path.read_text() + section)
        return path


async def put(client: ParticipantClient, n: int) -> tuple[float, int, str | None]:
    body = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(n), school=SCHOOL)
    started = time.monotonic()
    token = await client.token(scope="progress", purpose="b")
    answer = await client.call(
        "PUT", f"/v1/progress/{body['id']}", token=token, json=body, headers={"Edu-Purpose": "b"}
    )
    return started, answer.status, answer.body.get("status") if isinstance(answer.body, dict) else None


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
async def test_a_revocation_through_one_node_refuses_the_next_exchange_on_both(tmp_path: Path) -> None:
    async with postgres_database() as dsn:
        first = SharedActivations(tmp_path / "one", redis_url="redis://127.0.0.1:6379/0", activation_dsn=dsn)
        second = SharedActivations(
            tmp_path / "two", clock=first.clock, max_staleness=first.max_staleness, origin=first, activation_dsn=dsn
        )
        await first.start()
        await second.start()
        try:
            await first.activate_demo_schools()
            assert first.node is not None and second.node is not None
            key = await first.node.activations.create_school_key(SCHOOL, "application administrator")
            (progress,) = await first.node.activations.find(school=SCHOOL, data_service="leermateriaalgebruik")
            clients = [first.client("publisher"), second.client("publisher")]
            for client in clients:  # both nodes admit, and cache the activation
                assert (await put(client, 1))[1] == 201

            results: list[tuple[float, int, str | None]] = []
            revoked_at: float | None = None

            async def stream() -> None:  # until ten exchanges after the revocation (bounded)
                after = 0
                for n in range(2000):
                    results.append(await put(clients[n % 2], n))
                    after += revoked_at is not None
                    if after >= 10:
                        return

            async def revoke_midway() -> None:
                nonlocal revoked_at
                await asyncio.sleep(0.3)
                connector = aiohttp.TCPConnector(ssl=first.trust(None))
                async with (
                    aiohttp.ClientSession(connector=connector) as school,
                    school.post(
                        f"{first.base_url}/consent/v1/statuses/{progress.id}/revoke",
                        json={"reason": "the school ended the contract"},
                        headers={"Authorization": f"ApiKey {key}"},
                    ) as answer,
                ):
                    assert answer.status == 200, await answer.text()
                    assert json.loads(await answer.text())["status"] == "revoked"
                revoked_at = time.monotonic()

            await asyncio.gather(stream(), revoke_midway())
            assert revoked_at is not None
            before = [status for started, status, _ in results if started < revoked_at]
            after = [(status, edu) for started, status, edu in results if started > revoked_at]
            assert 201 in before and after
            assert set(after) == {(403, "0022")}  # every exchange begun after the revocation, on either node
            served = [*first.received.progress.values(), *second.received.progress.values()]
            assert len(served) == len([r for r in results if r[1] == 201]) + 2
        finally:
            await second.close()
            await first.close()
