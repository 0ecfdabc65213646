"""A node follows the register: it verifies every snapshot, refuses tampering and rollback while keeping its
last good register, fails closed when it loses contact, and learns of changes through the feed at once."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from register_fixtures import OIN_PUBLISHER, seed

from connectors.register_source import RegisterSource
from trust.pki import Issued
from trust.register import ParticipantStatus, RegisterDocument, RegisterHolder
from trust.register_service.store import RegisterStore
from trust.snapshot import PrivateKey, sign_snapshot


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> float:
    """Seconds until `predicate` held; fails the test if it did not within `within`."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > within:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.005)
    return time.perf_counter() - start


def document(serial: int, name: str = "Uitgeverij Noord") -> RegisterDocument:
    return RegisterDocument.model_validate({
        "serial": serial, "issued_at": datetime.now(UTC),
        "participants": [{"oin": OIN_PUBLISHER, "name": name, "status": "active"}],
    })


def tampered(token: str) -> str:
    """The same snapshot with one participant's name changed in the payload, signature left as it was."""
    header, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    forged = base64.urlsafe_b64encode(raw.replace(b"Uitgeverij Noord", b"Uitgeverij Vals")).rstrip(b"=").decode()
    return ".".join([header, forged, signature])


class HostileRegister:
    """Stands where the register service should be and serves whatever the test puts in `token`,
    on the snapshot endpoint and, one event per `push`, on the feed."""

    def __init__(self) -> None:
        self.token = ""
        self.pushed: asyncio.Queue[str] = asyncio.Queue()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/register/snapshot", self._snapshot)
        app.router.add_get("/v1/register/feed", self._feed)
        self.runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def _snapshot(self, request: web.Request) -> web.Response:
        return web.Response(text=self.token, content_type="application/jose")

    async def _feed(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        while True:
            token = await self.pushed.get()
            await response.write(f"event: snapshot\ndata: {token}\n\n".encode())

    async def push(self, token: str) -> None:
        await self.pushed.put(token)

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest.fixture
async def hostile() -> AsyncIterator[HostileRegister]:
    register = HostileRegister()
    await register.start()
    yield register
    await register.stop()


@pytest.fixture
async def sources() -> AsyncIterator[list[RegisterSource]]:
    started: list[RegisterSource] = []
    yield started
    for source in started:
        await source.close()


async def test_a_node_follows_a_register_file_and_rereads_it_when_it_changes(
        tmp_path: Path, operator_key: PrivateKey, sources: list[RegisterSource]) -> None:
    path = tmp_path / "register.jws"
    path.write_text(sign_snapshot(document(3), operator_key))
    holder = RegisterHolder(max_staleness=5)
    source = RegisterSource(holder, source=str(path), operator_key=operator_key.public_key(), poll_interval=0.05)
    sources.append(source)
    await source.start()
    assert holder.serial == 3 and holder.fresh()

    path.write_text(sign_snapshot(document(4, "Uitgeverij Noord BV"), operator_key))
    await wait_until(lambda: holder.serial == 4)
    assert holder.register.participant(OIN_PUBLISHER).name == "Uitgeverij Noord BV"  # type: ignore[union-attr]


async def test_a_tampered_snapshot_is_refused_and_logged_and_the_last_good_one_kept(
        hostile: HostileRegister, operator_key: PrivateKey, sources: list[RegisterSource]) -> None:
    good = sign_snapshot(document(5), operator_key)
    hostile.token = good
    holder = RegisterHolder(max_staleness=60)
    source = RegisterSource(holder, source=hostile.url, operator_key=operator_key.public_key(), poll_interval=0.05)
    sources.append(source)
    await source.start()
    assert holder.serial == 5

    with structlog.testing.capture_logs() as logs:
        forged = tampered(sign_snapshot(document(6), operator_key))
        hostile.token = forged  # on the snapshot endpoint...
        await hostile.push(forged)  # ...and on the feed
        await wait_until(lambda: source.state.refused >= 2)

    assert holder.serial == 5
    assert holder.register.participant(OIN_PUBLISHER).name == "Uitgeverij Noord"  # type: ignore[union-attr]
    refusals = [entry for entry in logs if entry["event"] == "register snapshot refused"]
    assert {entry["origin"] for entry in refusals} >= {"poll", "feed"}
    assert all("signature" in entry["reason"] and entry["kept"] == 5 for entry in refusals)


async def test_a_snapshot_signed_with_another_key_is_refused(
        hostile: HostileRegister, operator_key: PrivateKey, sources: list[RegisterSource]) -> None:
    hostile.token = sign_snapshot(document(5), operator_key)
    holder = RegisterHolder(max_staleness=60)
    source = RegisterSource(holder, source=hostile.url, operator_key=operator_key.public_key(), poll_interval=0.05)
    sources.append(source)
    await source.start()

    impostor = ec.generate_private_key(ec.SECP256R1())
    await hostile.push(sign_snapshot(document(99, "Uitgeverij Vals"), impostor))
    await wait_until(lambda: source.state.refused >= 1)
    assert holder.serial == 5


async def test_an_older_serial_is_refused_as_a_rollback_and_the_newer_register_kept(
        hostile: HostileRegister, operator_key: PrivateKey, sources: list[RegisterSource]) -> None:
    hostile.token = sign_snapshot(document(8), operator_key)
    holder = RegisterHolder(max_staleness=60)
    source = RegisterSource(holder, source=hostile.url, operator_key=operator_key.public_key(), poll_interval=0.05)
    sources.append(source)
    await source.start()

    with structlog.testing.capture_logs() as logs:
        hostile.token = sign_snapshot(document(7, "Uitgeverij Oud"), operator_key)  # validly signed, but older
        await wait_until(lambda: source.state.refused >= 1)
    assert holder.serial == 8
    assert holder.register.participant(OIN_PUBLISHER).name == "Uitgeverij Noord"  # type: ignore[union-attr]
    assert any(e["event"] == "register rollback refused" and e["offered"] == 7 and e["kept"] == 8 for e in logs)


async def test_a_node_that_loses_the_register_goes_stale_after_max_staleness_and_recovers_when_it_returns(
        sqlite_store: RegisterStore, operator_key: PrivateKey, server_tls: Issued, client_ssl: ssl.SSLContext,
        service_factory: Callable[..., Any], sources: list[RegisterSource]) -> None:
    await seed(sqlite_store)
    service = await service_factory(sqlite_store, operator_key, tls=server_tls, heartbeat=0.1)
    holder = RegisterHolder(max_staleness=0.6)
    source = RegisterSource(holder, source=service.url, operator_key=operator_key.public_key(), poll_interval=0.1,
                            ssl=client_ssl, feed_idle_timeout=0.5, max_backoff=0.2)
    sources.append(source)
    await source.start()
    assert holder.fresh()
    serial = holder.serial

    await service.stop()
    stale_after = await wait_until(lambda: not holder.fresh(), within=5)
    print(f"\nregister unreachable: node stale after {stale_after:.2f} s (max_staleness 0.6 s)")
    assert stale_after >= 0.3  # it kept deciding on its last good register until then
    assert holder.serial == serial  # and it kept that register: only freshness fails

    # While it is down, the operator suspends the publisher; the restarted register delivers it.
    changed = await sqlite_store.set_participant_status(OIN_PUBLISHER, ParticipantStatus.SUSPENDED,
                                                        reason="breach", actor="alice")
    await service.start()
    await wait_until(lambda: holder.fresh() and holder.serial == changed, within=5)
    await wait_until(lambda: source.state.feed_connected, within=5)


async def test_a_node_started_while_the_register_is_down_refuses_until_a_good_snapshot_arrives(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any],
        sources: list[RegisterSource]) -> None:
    serial = await seed(sqlite_store)
    service = await service_factory(sqlite_store, operator_key)
    await service.stop()  # it has a port, but nothing answers there
    holder = RegisterHolder(max_staleness=5)
    source = RegisterSource(holder, source=service.url, operator_key=operator_key.public_key(), poll_interval=0.1,
                            max_backoff=0.2)
    sources.append(source)
    await source.start()  # does not raise: the node starts, not ready
    assert holder.register is None and not holder.fresh()
    assert source.state.last_error is not None

    await service.start()
    await wait_until(lambda: holder.fresh() and holder.serial == serial)


async def test_the_feed_brings_a_suspension_long_before_the_next_poll(
        sqlite_store: RegisterStore, operator_key: PrivateKey, server_tls: Issued, client_ssl: ssl.SSLContext,
        service_factory: Callable[..., Any], sources: list[RegisterSource]) -> None:
    await seed(sqlite_store)
    service = await service_factory(sqlite_store, operator_key, tls=server_tls)
    holder = RegisterHolder(max_staleness=300)
    source = RegisterSource(holder, source=service.url, operator_key=operator_key.public_key(), poll_interval=60,
                            ssl=client_ssl)
    sources.append(source)
    await source.start()
    await wait_until(lambda: source.state.feed_connected)

    changed = await sqlite_store.set_participant_status(OIN_PUBLISHER, ParticipantStatus.SUSPENDED,
                                                       reason="breach", actor="alice")
    elapsed = await wait_until(lambda: holder.serial == changed, within=1.0)
    print(f"\nfeed delivered the suspension in {elapsed * 1000:.1f} ms (poll interval 60 s)")
    refusal = holder.register.participant(OIN_PUBLISHER).refusal(datetime.now(UTC))  # type: ignore[union-attr]
    assert refusal is not None and "suspended" in refusal
