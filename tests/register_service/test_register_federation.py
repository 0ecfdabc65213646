"""End to end: the register service, two gateway nodes of one deployment sharing real Redis, and a publisher
pushing progress through both. The operator suspends the publisher in the middle of the stream; every node
must refuse it within a second, even with tokens issued before the change."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from register_fixtures import REDIS_URL, Clock

from connectors.samples.federation import SCHOOL, Federation
from connectors.samples.publisher import ParticipantClient, progress_record
from trust.pki import issue_server
from trust.register import ParticipantStatus
from trust.register_service.keys import public_pem
from trust.register_service.store import RegisterStore
from trust.snapshot import PrivateKey

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ECK_ID = "https://ketenid.nl/201703/" + "ab" * 64


async def register_of(federation: Federation, store: RegisterStore) -> None:
    """The federation's participants, certificates, clients, keurmerken and CA, entered as an operator would."""
    await store.add_trusted_ca(federation.ca.cert_pem().decode(), actor="operator")
    for party in federation.parties.values():
        participant = party.participant()
        await store.add_participant(party.oin, party.name, kvk=participant.kvk, status=ParticipantStatus.APPLIED,
                                    actor="operator")
        await store.add_certificate(party.oin, party.identity.cert_pem().decode(), actor="operator")
        for client in participant.clients:
            await store.add_client(party.oin, client.client_id, jwks=client.jwks, actor="operator")
        for keurmerk in participant.keurmerken:
            await store.grant_keurmerk(party.oin, keurmerk.data_service, keurmerk.role,
                                       valid_from=keurmerk.valid_from, actor="operator")
        await store.set_participant_status(party.oin, party.status, reason=party.status_reason, actor="operator")


class RegisterFollowingNode(Federation):
    """A gateway node of the sample federation whose `[register]` source is the register service over HTTPS:
    it verifies the service's certificate with the deployment's CA (`ca_bundle`)."""

    def write_config(self, upstream: str) -> Path:
        path = super().write_config(upstream)
        pinned = 'operator_key = "operator.pub.pem"'
        text = path.read_text()
        assert pinned in text
        path.write_text(text.replace(pinned, f'{pinned}\nca_bundle = "register-ca.pem"'))
        return path


@dataclass
class Deployment:
    store: RegisterStore
    service: Any  # the running register service (stop/start: a restart)
    nodes: list[Federation]
    clock: Clock


@pytest.fixture
async def deployment_factory(tmp_path: Path, sqlite_store: RegisterStore, operator_key: PrivateKey,
                             service_factory: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
    started: list[Federation] = []
    prefixes: list[str] = []

    async def make(*, max_staleness: float = 30.0) -> Deployment:
        clock = Clock()
        first = RegisterFollowingNode(tmp_path / "node-a", clock=clock, redis_url=REDIS_URL,
                                      max_staleness=max_staleness, redis_prefix=f"edugate-t-{uuid.uuid4().hex[:12]}")
        prefixes.append(first.redis_prefix)
        # The operator of this deployment signs with the service's key: nodes pin it.
        first.operator_key = operator_key  # type: ignore[assignment]
        await register_of(first, sqlite_store)
        # The register service over HTTPS, with a server certificate from the deployment's CA.
        service = await service_factory(sqlite_store, operator_key, heartbeat=1.0,
                                        tls=issue_server(first.ca, ("127.0.0.1",)))
        first.register_path = service.url  # type: ignore[assignment]  # the nodes' [register] source
        second = RegisterFollowingNode(tmp_path / "node-b", clock=clock, max_staleness=max_staleness, origin=first)
        for node in (first, second):
            (node.directory / "operator.pub.pem").write_bytes(public_pem(operator_key))
            (node.directory / "register-ca.pem").write_bytes(first.ca.cert_pem())
            await node.start()
            started.append(node)
            await node.activate_demo_schools()
        return Deployment(sqlite_store, service, [first, second], clock)

    yield make
    for node in started:
        await node.close()
    client = aioredis.from_url(REDIS_URL)
    for prefix in prefixes:
        async for key in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(key)
    await client.aclose()


@pytest.fixture
async def deployment(deployment_factory: Callable[..., Any]) -> Deployment:
    deployment: Deployment = await deployment_factory()
    return deployment


async def stream(client: ParticipantClient, token: str, log: list[tuple[float, float, int, str]],
                 stop: asyncio.Event) -> None:
    """Push progress records back to back with one token, noting (sent, answered, status, message)."""
    while not stop.is_set():
        record = progress_record(record_id=str(uuid.uuid4()), eck_id=ECK_ID, school=SCHOOL)
        sent = time.perf_counter()
        answer = await client.call("PUT", f"/v1/progress/{record['id']}", token=token, json=record,
                                   headers={"Edu-Purpose": "b"})
        message = answer.body.get("statusMessage", "") if isinstance(answer.body, dict) else ""
        log.append((sent, time.perf_counter(), answer.status, message))


async def test_a_suspension_refuses_the_publisher_on_every_node_within_a_second(deployment: Deployment) -> None:
    store, nodes = deployment.store, deployment.nodes
    sources = [node.node.register_source for node in nodes]  # type: ignore[union-attr]
    publisher_oin = nodes[0].parties["publisher"].oin
    assert all(source.source.startswith("https://") for source in sources)
    deadline = time.perf_counter() + 10
    while sum(s.state.feed_connected for s in sources) != 1:  # one feed for the deployment
        assert time.perf_counter() < deadline, [s.status() for s in sources]
        await asyncio.sleep(0.02)

    clients = [node.client("publisher") for node in nodes]
    tokens = [await client.token(scope="progress", purpose="b") for client in clients]  # issued before the change
    logs: list[list[tuple[float, float, int, str]]] = [[] for _ in nodes]
    stop = asyncio.Event()
    streams = [asyncio.create_task(stream(c, t, log, stop)) for c, t, log in zip(clients, tokens, logs, strict=True)]
    await asyncio.sleep(0.5)
    assert all(log and log[-1][2] == 201 for log in logs), [log[-3:] for log in logs]

    changed_at = time.perf_counter()
    await store.set_participant_status(publisher_oin, ParticipantStatus.SUSPENDED, reason="breach of covenant",
                                       actor="operator")
    committed = (time.perf_counter() - changed_at) * 1000
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.gather(*streams)

    latencies = []
    for index, log in enumerate(logs):
        # Every request sent after the moment this node first refused is refused too (no flapping back).
        refused = [entry for entry in log if entry[2] == 403]
        assert refused, f"node {index} never refused the suspended publisher"
        first_refused = refused[0]
        assert all(status == 403 for sent, _, status, _ in log if sent >= first_refused[0])
        assert "suspended" in first_refused[3]
        # The latency: from the operator's change until the answer of the first refused request.
        latencies.append(first_refused[1] - changed_at)
        accepted_after = [entry for entry in log if entry[2] == 201 and entry[0] > changed_at]
        print(f"\nnode {index}: {len(log)} requests, last accepted sent "
              f"{(max((e[0] for e in accepted_after), default=changed_at) - changed_at) * 1000:.1f} ms after the "
              f"change, first refusal answered {(first_refused[1] - changed_at) * 1000:.1f} ms after it "
              f"(feed leader: {sources[index].state.leader})")
    print(f"revocation latency, register service -> 2 gateway nodes (1 feed + Redis fan-out): "
          f"max {max(latencies) * 1000:.1f} ms (the operator's change itself took {committed:.1f} ms to commit)")
    assert max(latencies) <= 1.0


async def push(client: ParticipantClient, token: str) -> tuple[int, Any]:
    record = progress_record(record_id=str(uuid.uuid4()), eck_id=ECK_ID, school=SCHOOL)
    answer = await client.call("PUT", f"/v1/progress/{record['id']}", token=token, json=record,
                               headers={"Edu-Purpose": "b"})
    return answer.status, answer.body


async def test_nodes_that_lose_the_register_refuse_with_503_after_max_staleness_and_recover_after_its_restart(
        deployment_factory: Callable[..., Any]) -> None:
    deployment: Deployment = await deployment_factory(max_staleness=1.5)
    clients = [node.client("publisher") for node in deployment.nodes]
    tokens = [await client.token(scope="progress", purpose="b") for client in clients]
    assert [(await push(c, t))[0] for c, t in zip(clients, tokens, strict=True)] == [201, 201]

    await deployment.service.stop()
    stopped = time.monotonic()
    holders = [node.node.register_source.holder for node in deployment.nodes]  # type: ignore[union-attr]
    answers = [(0, None)] * 2
    while not all(status == 503 for status, _ in answers):
        assert time.monotonic() - stopped < 6, answers
        await asyncio.sleep(0.1)
        answers = [await push(c, t) for c, t in zip(clients, tokens, strict=True)]
    print(f"\nregister down: both nodes refuse with 503 after {time.monotonic() - stopped:.2f} s "
          f"(max_staleness 1.5 s)")
    # Each kept working on its last good register until max_staleness after the register's last word to it
    # (a heartbeat or poll before the stop, which is why the time since the stop itself is shorter).
    assert time.monotonic() >= max(holder.last_good for holder in holders) + 1.5
    assert all(body["status"] == "0099" and "register" in body["statusMessage"] for _, body in answers)

    await deployment.service.start()
    deadline = time.perf_counter() + 6
    while [(await push(c, t))[0] for c, t in zip(clients, tokens, strict=True)] != [201, 201]:
        assert time.perf_counter() < deadline
        await asyncio.sleep(0.1)


async def test_a_scheduled_withdrawal_bites_on_every_node_at_its_effective_time_without_a_new_serial(
        deployment: Deployment) -> None:
    publisher_oin = deployment.nodes[0].parties["publisher"].oin
    effective = deployment.clock() + timedelta(days=30)
    serial = await deployment.store.schedule_withdrawal(publisher_oin, effective, "uittreding: stopt met de dienst",
                                                        actor="operator")
    sources = [node.node.register_source for node in deployment.nodes]  # type: ignore[union-attr]
    deadline = time.perf_counter() + 3
    while not all(source.holder.serial == serial for source in sources):
        assert time.perf_counter() < deadline
        await asyncio.sleep(0.02)
    clients = [node.client("publisher") for node in deployment.nodes]
    tokens = [await client.token(scope="progress", purpose="b") for client in clients]
    assert [(await push(c, t))[0] for c, t in zip(clients, tokens, strict=True)] == [201, 201]

    deployment.clock.freeze(effective)  # the nodes' clock reaches the effective date; the register is silent
    answers = [await push(c, t) for c, t in zip(clients, tokens, strict=True)]
    assert [status for status, _ in answers] == [403, 403]
    assert all("withdrew" in body["statusMessage"] for _, body in answers)
    assert await deployment.store.serial() == serial
