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

from connectors.register_source import RegisterSource, server_sent_events
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
        self.raw: bytes | None = None  # served instead of `token` when set...
        self.declared = True  # ...with its Content-Length, or streamed chunked without one
        self.pushed: asyncio.Queue[str | bytes] = asyncio.Queue()
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

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        if self.raw is None:
            return web.Response(text=self.token, content_type="application/jose")
        if self.declared:
            return web.Response(body=self.raw, content_type="application/jose")
        response = web.StreamResponse(headers={"Content-Type": "application/jose"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(self.raw), 8192):
            await response.write(self.raw[start:start + 8192])
        await response.write_eof()
        return response

    async def _feed(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        while True:
            token = await self.pushed.get()
            await response.write(token if isinstance(token, bytes) else f"event: snapshot\ndata: {token}\n\n".encode())

    async def push(self, token: str | bytes) -> None:
        """One snapshot event around `token`, or `bytes` written to the feed as they are."""
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


async def _following(hostile: HostileRegister, operator_key: PrivateKey, sources: list[RegisterSource],
                     max_document: int) -> tuple[RegisterHolder, RegisterSource]:
    """A source on `hostile` that has installed serial 5, its documents bounded to `max_document` bytes."""
    hostile.token = sign_snapshot(document(5), operator_key)
    holder = RegisterHolder(max_staleness=60)
    source = RegisterSource(holder, source=hostile.url, operator_key=operator_key.public_key(), poll_interval=0.05,
                            max_document=max_document, max_backoff=0.2)
    sources.append(source)
    await source.start()
    assert holder.serial == 5
    return holder, source


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "streamed"])
async def test_a_snapshot_over_the_size_bound_is_not_read_and_the_last_good_register_kept(
        hostile: HostileRegister, operator_key: PrivateKey, sources: list[RegisterSource], declared: bool) -> None:
    holder, source = await _following(hostile, operator_key, sources, max_document=4096)
    hostile.raw, hostile.declared = b"e" * 100_000, declared
    with structlog.testing.capture_logs() as logs:
        await wait_until(lambda: "a register document may have" in (source.state.last_error or ""))
    assert ("declares 100000 bytes" if declared else "runs past the 4096 bytes") in (source.state.last_error or "")
    assert holder.serial == 5
    assert any(e["event"] == "register poll failed" and "4096" in e["error"] for e in logs)


async def test_a_snapshot_that_is_not_ascii_is_no_jws_and_is_not_installed(
        hostile: HostileRegister, operator_key: PrivateKey, sources: list[RegisterSource]) -> None:
    holder, source = await _following(hostile, operator_key, sources, max_document=1 << 20)
    newer = sign_snapshot(document(6), operator_key)
    hostile.raw = newer.encode() + "\u00e9".encode()  # a valid snapshot with a byte no JWS holds after it
    await wait_until(lambda: "not a JWS" in (source.state.last_error or ""))
    assert f"a non-ASCII byte at {len(newer)}" in (source.state.last_error or "")
    assert holder.serial == 5


async def test_a_feed_event_of_many_short_lines_over_the_bound_ends_the_feed_and_keeps_the_register(
        hostile: HostileRegister, operator_key: PrivateKey, sources: list[RegisterSource]) -> None:
    holder, source = await _following(hostile, operator_key, sources, max_document=4096)
    await wait_until(lambda: source.state.feed_connected)
    await hostile.push(b"event: snapshot\n" + b"data: x\n" * 2000)  # no line is long; the event is
    await wait_until(lambda: "feed event larger than 4096 bytes" in (source.state.last_error or ""))
    assert holder.serial == 5
    hostile.token = sign_snapshot(document(6), operator_key)  # and the source goes on: the poll brings the next
    await wait_until(lambda: holder.serial == 6)


class _Trickle:
    """A response whose body arrives a few bytes at a time, as a slow network may deliver it."""

    def __init__(self, body: bytes, size: int) -> None:
        self.content = self
        self.parts = [body[i:i + size] for i in range(0, len(body), size)]

    async def iter_any(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


@pytest.mark.parametrize("size", [1, 3, 7, 4096])
async def test_feed_events_split_anywhere_across_packets_arrive_whole(size: int) -> None:
    body = (b": comment\r\nevent: snapshot\r\ndata: first\r\ndata: half\r\nid: 7\r\n\r\n"
            b"event: heartbeat\ndata: {\"serial\": 7}\n\n" + b"data: " + b"z" * 3000 + b"\n\n")
    events = [e async for e in server_sent_events(_Trickle(body, size), max_event=4096)]  # type: ignore[arg-type]
    assert events == [("snapshot", "first\nhalf", "7"), ("heartbeat", '{"serial": 7}', None),
                      ("message", "z" * 3000, None)]


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
