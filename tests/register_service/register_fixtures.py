"""Shared pieces of the register service tests: participants, a controllable clock, the running service."""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from trust.pki import Issued
from trust.register import ParticipantStatus, Role
from trust.register_service.app import create_app
from trust.register_service.server import MAX_CONNECTIONS, SEND_TIMEOUT, ServiceSite, service_runner
from trust.register_service.store import RegisterStore
from trust.snapshot import PrivateKey

REDIS_URL = "redis://127.0.0.1:6379/0"

OIN_PUBLISHER = "00000003111111110000"
OIN_DASHBOARD = "00000003222222220000"


class Clock:
    """A controllable UTC clock for scheduled withdrawals and session expiry."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)
        self.frozen = False

    def __call__(self) -> datetime:
        return self.now if self.frozen else datetime.now(UTC)

    def freeze(self, at: datetime | None = None) -> None:
        self.frozen = True
        self.now = at or datetime.now(UTC)

    def advance(self, delta: timedelta) -> None:
        self.freeze(self.now + delta)


async def seed(store: RegisterStore, publisher_pem: str | None = None) -> int:
    """Two active participants: a publisher (Verzender of leermateriaalgebruik) and a dashboard."""
    await store.add_participant(OIN_PUBLISHER, "Uitgeverij Noord", kvk="11111111", status=ParticipantStatus.ACTIVE,
                                actor="seed")
    await store.add_participant(OIN_DASHBOARD, "Dashboard Zuid", status=ParticipantStatus.ACTIVE, actor="seed")
    await store.grant_keurmerk(OIN_PUBLISHER, "leermateriaalgebruik", Role.VERZENDER, actor="seed")
    serial = await store.grant_keurmerk(OIN_DASHBOARD, "leermateriaalgebruik", Role.ONTVANGER, actor="seed")
    if publisher_pem:
        serial = await store.add_certificate(OIN_PUBLISHER, publisher_pem, actor="seed")
    return serial


@dataclass
class RunningService:
    """The register service on a real socket, on the site `edugate register serve` uses. `stop()` and `start()`
    again on the same port: a restart."""

    store: RegisterStore
    key: PrivateKey
    tls: Issued | None
    options: dict[str, Any] = field(default_factory=dict)
    port: int = 0
    runner: web.AppRunner | None = None
    send_timeout: float = SEND_TIMEOUT
    max_connections: int = MAX_CONNECTIONS

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self._tls_files())
        app = create_app(self.store, self.key, **self.options)
        self.runner = service_runner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = ServiceSite(self.runner, "127.0.0.1", self.port, send_timeout=self.send_timeout,
                           max_connections=self.max_connections, ssl_context=context, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def _tls_files(self) -> tuple[Path, Path]:
        assert self.tls is not None
        directory = Path(tempfile.mkdtemp(prefix="register-tls-"))
        return self.tls.write(directory, "server")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
