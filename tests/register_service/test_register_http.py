"""What the register service publishes: the signed snapshot with ETag, the ordered, resumable change feed,
and the public register page. Over real HTTPS against the running service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import structlog
from register_fixtures import OIN_DASHBOARD, OIN_PUBLISHER, seed
from yarl import URL

from connectors.register_source import server_sent_events
from tests.databases import postgres_database
from tests.raw_answers import answer_before_close
from trust.pki import Issued
from trust.register import ParticipantStatus, Role
from trust.register_service.api import PUBLISHER
from trust.register_service.store import RegisterStore
from trust.snapshot import PrivateKey, SnapshotRejected, verify_snapshot


async def test_the_snapshot_is_signed_by_the_operator_and_tagged_with_its_serial(
        store: RegisterStore, operator_key: PrivateKey, server_tls: Issued, client_ssl: ssl.SSLContext,
        service_factory: Callable[..., Any]) -> None:
    serial = await seed(store)
    service = await service_factory(store, operator_key, tls=server_tls)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{service.url}/v1/register/snapshot", ssl=client_ssl) as response:
            token = await response.text()
            assert response.status == 200
            assert response.content_type == "application/jose"
            assert response.headers["ETag"] == f'"{serial}"'
            etag = response.headers["ETag"]
        register = verify_snapshot(token, operator_key.public_key())
        assert register.serial == serial
        assert register.participant(OIN_PUBLISHER).holds(  # type: ignore[union-attr]
            "leermateriaalgebruik", Role.VERZENDER, register.issued_at)

        async with http.get(f"{service.url}/v1/register/snapshot", ssl=client_ssl,
                            headers={"If-None-Match": etag}) as response:
            assert response.status == 304
            assert await response.read() == b""

        newer = await store.set_participant_status(OIN_PUBLISHER, ParticipantStatus.SUSPENDED, reason="breach",
                                                   actor="alice")
        async with http.get(f"{service.url}/v1/register/snapshot", ssl=client_ssl,
                            headers={"If-None-Match": etag}) as response:
            assert response.status == 200
            assert response.headers["ETag"] == f'"{newer}"'
            assert verify_snapshot(await response.text(), operator_key.public_key()).serial == newer


async def test_a_snapshot_does_not_verify_with_another_key(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any]) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    service = await service_factory(sqlite_store, operator_key)
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/v1/register/snapshot") as response:
        token = await response.text()
    with pytest.raises(SnapshotRejected, match="signature"):
        verify_snapshot(token, ec.generate_private_key(ec.SECP256R1()).public_key())


async def _events(response: aiohttp.ClientResponse, count: int) -> list[tuple[str, str, str | None]]:
    events: list[tuple[str, str, str | None]] = []
    async for event in server_sent_events(response):
        events.append(event)
        if len(events) == count:
            break
    return events


async def test_the_feed_sends_one_signed_snapshot_per_serial_in_order_and_resumes_after_the_last_seen(
        store: RegisterStore, operator_key: PrivateKey, server_tls: Issued, client_ssl: ssl.SSLContext,
        service_factory: Callable[..., Any]) -> None:
    base = await seed(store)
    service = await service_factory(store, operator_key, tls=server_tls, heartbeat=0.3)
    public = operator_key.public_key()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{service.url}/v1/register/feed", params={"after": str(base - 2)},
                            ssl=client_ssl) as response:
            assert response.content_type == "text/event-stream"
            backlog = await _events(response, 2)
            assert [(e, i) for e, _, i in backlog] == [("snapshot", str(base - 1)), ("snapshot", str(base))]
            # Live: changes made now arrive in serial order, each a whole verifiable snapshot.
            await store.set_participant_status(OIN_PUBLISHER, ParticipantStatus.SUSPENDED, reason="x", actor="a")
            await store.set_participant_status(OIN_DASHBOARD, ParticipantStatus.SUSPENDED, reason="y", actor="a")
            live = [e for e in await _events(response, 4) if e[0] == "snapshot"][:2]
            assert [int(i or 0) for _, _, i in live] == [base + 1, base + 2]
            assert [verify_snapshot(data, public).serial for _, data, _ in live] == [base + 1, base + 2]

        # A reconnecting reader names the last serial it has, and gets only what came after.
        async with http.get(f"{service.url}/v1/register/feed", headers={"Last-Event-ID": str(base + 1)},
                            ssl=client_ssl) as response:
            first, heartbeat = await _events(response, 2)
            assert (first[0], first[2]) == ("snapshot", str(base + 2))
            assert heartbeat[0] == "heartbeat" and json.loads(heartbeat[1]) == {"serial": base + 2}


async def test_a_feed_reader_without_a_resume_point_gets_the_latest_snapshot_first(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any]) -> None:
    serial = await seed(sqlite_store)
    service = await service_factory(sqlite_store, operator_key)
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/v1/register/feed") as response:
        (event, data, event_id), = await _events(response, 1)
    assert (event, event_id) == ("snapshot", str(serial))
    assert verify_snapshot(data, operator_key.public_key()).serial == serial


async def test_a_reader_resuming_before_the_oldest_kept_serial_gets_the_latest_snapshot(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any]) -> None:
    sqlite_store.kept_documents = 2
    serial = await seed(sqlite_store)  # serials 2..5; only 4 and 5 are kept
    service = await service_factory(sqlite_store, operator_key)
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/v1/register/feed",
                                                         params={"after": "1"}) as response:
        first, second = await _events(response, 2)
    assert (first[0], first[2]) == ("snapshot", str(serial))  # each snapshot is the whole register
    assert second[0] == "heartbeat"


async def test_an_ed25519_operator_key_works_end_to_end(
        sqlite_store: RegisterStore, service_factory: Callable[..., Any]) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from connectors.register_source import RegisterSource
    from trust.register import RegisterHolder

    key = ed25519.Ed25519PrivateKey.generate()
    serial = await seed(sqlite_store)
    service = await service_factory(sqlite_store, key)
    holder = RegisterHolder()
    source = RegisterSource(holder, source=service.url, operator_key=key.public_key(), feed=False)
    await source.start()
    await source.close()
    assert holder.serial == serial and holder.fresh()


async def test_a_malformed_resume_point_gets_an_edu_v_error(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any]) -> None:
    service = await service_factory(sqlite_store, operator_key)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{service.url}/v1/register/feed", params={"after": "-1; drop"}) as response:
            assert response.status == 400
            body = await response.json()
        async with http.get(f"{service.url}/v1/register/nothing-here") as missing:
            assert missing.status == 404
            assert (await missing.json())["status"] == "0099"
    assert body["status"] == "0099"
    assert "non-negative integer" in body["statusMessage"]


@pytest.mark.parametrize("after", ["9" * 20, str(2**63), "9" * 5000, "²", "١٢"])
async def test_a_resume_point_past_a_64_bit_serial_or_in_other_digits_gets_an_edu_v_error(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any], after: str) -> None:
    service = await service_factory(sqlite_store, operator_key)
    async with aiohttp.ClientSession() as http:
        for attempt in ({"params": {"after": after}}, {"headers": {"Last-Event-ID": after}}):
            async with http.get(f"{service.url}/v1/register/feed", **attempt) as response:  # type: ignore[arg-type]
                assert response.status == 400  # was 500 (the database's integer overflow) or int()'s own message
                assert "non-negative integer up to" in (await response.json())["statusMessage"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_a_change_by_another_process_reaches_feed_readers(
        backend: str, tmp_path: Any, operator_key: PrivateKey, service_factory: Callable[..., Any]) -> None:
    """The CLI writes the same database over its own connection: the service notices and publishes it
    (PostgreSQL: LISTEN/NOTIFY, so the slow fallback poll here does not matter; SQLite: a cheap serial poll)."""
    async with contextlib.AsyncExitStack() as stack:
        if backend == "postgresql":
            target: Any = await stack.enter_async_context(postgres_database())
            watch_interval = 30.0
        else:
            target, watch_interval = tmp_path / "shared.sqlite", 0.05
        served = await RegisterStore.open(target)
        stack.push_async_callback(served.close)
        other = await RegisterStore.open(target)  # a second connection, as the CLI has
        stack.push_async_callback(other.close)
        service = await service_factory(served, operator_key, watch_interval=watch_interval, heartbeat=30.0)
        async with aiohttp.ClientSession() as http, http.get(f"{service.url}/v1/register/feed",
                                                             params={"after": "1"}) as response:
            await asyncio.sleep(0.1)  # let the service start listening
            serial = await other.add_participant(OIN_PUBLISHER, "Uitgeverij Noord", actor="cli")
            (event, _, event_id), = await asyncio.wait_for(_events(response, 1), 2)
        assert (event, event_id) == ("snapshot", str(serial))


async def _stalled_reader(url: str, client_ssl: ssl.SSLContext) -> asyncio.StreamWriter:
    """A feed subscriber that asks and then reads nothing, with a small receive window so its kernel takes little."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    target = URL(url)
    sock.connect((target.host, target.port))
    _, writer = await asyncio.open_connection(sock=sock, ssl=client_ssl, server_hostname=target.host, limit=4096)
    writer.write(f"GET /v1/register/feed HTTP/1.1\r\nHost: {target.host}\r\n\r\n".encode())
    await writer.drain()
    return writer


async def test_a_feed_reader_that_stops_reading_is_dropped_after_the_send_timeout_with_bounded_buffering(
        sqlite_store: RegisterStore, operator_key: PrivateKey, server_tls: Issued, client_ssl: ssl.SSLContext,
        service_factory: Callable[..., Any]) -> None:
    """While many changes are published, what the service holds for the stalled reader stays within about one
    event (it is not queued per change), the reader is dropped and logged, and a reader that reads gets every one."""
    base = await seed(sqlite_store)
    for n in range(40):  # snapshots of about 100 KiB: the stalled reader's kernel buffers fill within a few dozen
        base = await sqlite_store.add_participant(f"0000000390000{n:03d}0000", "Stichting " + "x" * 2000, actor="t")
    service = await service_factory(sqlite_store, operator_key, tls=server_tls, send_timeout=0.5, heartbeat=0.3)
    event_size = len((await service.runner.app[PUBLISHER].latest())[1])
    changes = 150
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/v1/register/feed",
                                                         params={"after": str(base)}, ssl=client_ssl) as healthy:
        stalled = await _stalled_reader(service.url, client_ssl)
        received = asyncio.create_task(_events(healthy, changes + 20))
        held = 0
        with structlog.testing.capture_logs() as logs:
            for n in range(changes):
                status = ParticipantStatus.SUSPENDED if n % 2 == 0 else ParticipantStatus.ACTIVE
                await sqlite_store.set_participant_status(f"0000000390000{n % 40:03d}0000", status, reason="r",
                                                          actor="t")
                held = max([held] + [c.transport.get_write_buffer_size() for c in service.runner.server.connections
                                     if c.transport is not None])
                await asyncio.sleep(0.02)
            async with asyncio.timeout(5):
                while len(service.runner.server.connections) > 1:
                    await asyncio.sleep(0.05)
            events = await asyncio.wait_for(received, 10)
        stalled.close()
    # asyncio's TLS transport pauses its writer past 512 KiB: the service holds that and the event being written,
    # however many changes come after.
    assert held <= 512 * 1024 + event_size < changes * event_size // 10
    dropped = [e for e in logs if e["event"] == "client took nothing of its answer: connection dropped"]
    assert len(dropped) == 1 and dropped[0]["seconds"] == 0.5
    serials = [int(i or 0) for e, _, i in events if e == "snapshot"]
    assert serials == list(range(base + 1, base + changes + 1))


@pytest.mark.parametrize("head", [b"X-Bad\x01: y\r\n", b"X-Long: " + b"a" * 9000 + b"\r\n"])
async def test_a_request_aiohttp_cannot_parse_gets_an_edu_v_error_not_plain_text(
        sqlite_store: RegisterStore, operator_key: PrivateKey, server_tls: Issued, client_ssl: ssl.SSLContext,
        service_factory: Callable[..., Any], head: bytes) -> None:
    service = await service_factory(sqlite_store, operator_key, tls=server_tls)
    target = URL(service.url)
    assert target.host is not None and target.port is not None
    raw = b"GET /v1/register/snapshot HTTP/1.1\r\nHost: register\r\n" + head + b"\r\n"
    status, answered_head, refused = await answer_before_close(target.host, target.port, raw, context=client_ssl)
    assert status == 400 and b"Content-Type: application/json" in answered_head
    assert refused["status"] == "0011" and refused["statusMessage"], refused


async def test_a_request_head_that_never_ends_is_closed_after_the_keepalive(
        sqlite_store: RegisterStore, operator_key: PrivateKey, server_tls: Issued, client_ssl: ssl.SSLContext,
        service_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("trust.register_service.server.KEEPALIVE", 0.5)
    service = await service_factory(sqlite_store, operator_key, tls=server_tls)
    target = URL(service.url)
    reader, writer = await asyncio.open_connection(target.host, target.port, ssl=client_ssl)
    started = asyncio.get_running_loop().time()
    writer.write(b"GET /v1/register/snapshot HTTP/1.1\r\nHost: register\r\n")
    closed = False
    async with asyncio.timeout(5):  # aiohttp's default would have waited 3630 s
        while not closed:  # a header line now and then, never the empty line that ends the head
            writer.write(b"X-Slow: 1\r\n")
            try:
                closed = await asyncio.wait_for(reader.read(1), 0.1) == b""
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
    writer.close()
    assert 0.4 < asyncio.get_running_loop().time() - started < 3


async def test_a_connection_past_max_connections_is_closed_as_it_arrives_and_logged_while_the_open_ones_work(
        sqlite_store: RegisterStore, operator_key: PrivateKey, server_tls: Issued, client_ssl: ssl.SSLContext,
        service_factory: Callable[..., Any]) -> None:
    serial = await seed(sqlite_store)
    service = await service_factory(sqlite_store, operator_key, tls=server_tls, max_connections=2)
    async with contextlib.AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(aiohttp.ClientSession()) for _ in range(2)]
        feeds = [await stack.enter_async_context(http.get(f"{service.url}/v1/register/feed", ssl=client_ssl))
                 for http in readers]
        target = URL(service.url)
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                reader, writer = await asyncio.open_connection(target.host, target.port, ssl=client_ssl)
                with contextlib.suppress(ConnectionError):
                    assert await asyncio.wait_for(reader.read(1), 2) == b""  # closed once its TLS is up
                writer.close()
        refusals = [e["refused_so_far"] for e in logs if e["event"] == "connections refused: too many open"]
        assert refusals == [1, 2, 4]  # said, not flooded
        for feed in feeds:  # the two admitted readers still get their snapshot
            (event, _, event_id), = await _events(feed, 1)
            assert (event, event_id) == ("snapshot", str(serial))
        feeds[0].close()
        await readers[0].close()
        async with asyncio.timeout(3):
            while True:  # once one has gone, a new connection is served
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with aiohttp.ClientSession() as later, later.get(f"{service.url}/v1/register/snapshot",
                                                                          ssl=client_ssl) as answer:
                        assert answer.status == 200
                        break
                await asyncio.sleep(0.05)


async def test_the_public_register_lists_who_holds_which_keurmerk_since_when_and_is_searchable(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any]) -> None:
    await seed(sqlite_store)
    await sqlite_store.set_participant_status(OIN_DASHBOARD, ParticipantStatus.SUSPENDED, reason="audit",
                                              actor="alice")
    since = (await sqlite_store.participant(OIN_PUBLISHER)).keurmerken[0].valid_from  # type: ignore[union-attr]
    service = await service_factory(sqlite_store, operator_key)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{service.url}/register") as response:
            dutch = await response.text()
            assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
        async with http.get(f"{service.url}/register", params={"q": "noord", "lang": "en"}) as response:
            english = await response.text()

    assert "Keurmerkregister" in dutch and "Uitgeverij Noord" in dutch and "Dashboard Zuid" in dutch
    assert "geschorst" in dutch and "leermateriaalgebruik" in dutch and "Verzender" in dutch
    assert since.strftime("%Y-%m-%d") in dutch
    assert "<script" not in dutch  # server-rendered, works without JavaScript
    assert "Uitgeverij Noord" in english and "Dashboard Zuid" not in english
    assert "Data service" in english


async def test_the_public_page_escapes_what_operators_typed(
        sqlite_store: RegisterStore, operator_key: PrivateKey, service_factory: Callable[..., Any]) -> None:
    await sqlite_store.add_participant(OIN_PUBLISHER, "<script>alert(1)</script>", actor="alice")
    service = await service_factory(sqlite_store, operator_key)
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/register") as response:
        html = await response.text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
