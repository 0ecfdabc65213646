"""The register service on its port: aiohttp's connection handler inside a guard that ends a client which takes
nothing of its answer for `send_timeout` (the node's `limits.send_timeout`, nginx's send_timeout), and turns away
connections past `max_connections` (the node's `limits.max_connections`).

Without it a feed reader or snapshot fetcher that stopped reading would hold its connection, the handler writing to
it and the buffered part of its answer for ever: aiohttp waits for the transport to drain with no end. A reader that
is dropped resumes from its last serial (`Last-Event-ID`) or polls the snapshot, as after any broken connection.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from http import HTTPStatus
from typing import cast

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from connectors.http_refusals import ConnectionLimit, answer_refusals_with

log = structlog.get_logger("edugate.register_service")

SEND_TIMEOUT = 60.0  # seconds a client may take nothing of its answer (the node's default)
# Seconds a connection may go without a whole request: idle between requests, or sending its head so slowly that
# it never ends (the node's exchange port: 75 s). aiohttp's own default, 3630 s, let one client hold a connection
# for an hour per head it trickles.
KEEPALIVE = 75.0
# Client connections open at once (the node's limits.max_connections): one more is closed as it arrives, so that
# feed readers cannot take every descriptor the service needs for its database and for nodes that poll.
MAX_CONNECTIONS = 1024


class OpenConnections:
    """What a site's connections share: how many are open, within their limit."""

    def __init__(self, limit: int) -> None:
        self.limit = ConnectionLimit(limit)
        self.count = 0

    def admit(self) -> bool:
        if not self.limit.admits(self.count):
            return False
        self.count += 1
        return True

    def release(self) -> None:
        self.count -= 1


def _edu_v_refusal(status: int, message: str | None) -> web.StreamResponse:
    """What aiohttp refuses before the app (a header byte HTTP does not allow, a line past 8190 bytes; a failed
    handler), in the Edu-V error format the service answers everything else in."""
    told = message if status < 500 and message else HTTPStatus(status).phrase  # a failure's detail stays in the log
    log.info("request refused", status=status, reason=told)
    return web.json_response({"status": "0011" if status == 400 else "0099", "statusMessage": told}, status=status)


class GuardedConnection(asyncio.Protocol):
    """One client connection: everything goes to aiohttp's RequestHandler; a write paused for `send_timeout`
    (the transport's buffer full because the client reads nothing) ends the connection."""

    def __init__(self, handler: RequestHandler, send_timeout: float, connections: OpenConnections) -> None:
        self._handler = handler
        self._send_timeout = send_timeout
        self._connections = connections
        self._admitted = False
        self._transport: asyncio.Transport | None = None
        self._stall: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if not self._connections.admit():
            self._transport.abort()
            return
        self._admitted = True
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self._admitted:
            self._handler.eof_received()
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._connections.release()
        self._stop_stall()
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._stall is None:
            self._stall = asyncio.get_running_loop().call_later(self._send_timeout, self._stalled)
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._stop_stall()
        self._handler.resume_writing()

    def _stop_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        assert self._transport is not None  # paused writing needs a connection
        log.warning("client took nothing of its answer: connection dropped", seconds=self._send_timeout,
                    peer=self._transport.get_extra_info("peername"),
                    unsent_bytes=self._transport.get_write_buffer_size())
        self._transport.abort()  # closing would wait for the very buffer the client does not take


class ServiceSite(web.BaseSite):
    """A TCP site whose connections are guarded (`GuardedConnection`); the runner's cleanup stops it."""

    __slots__ = ("_connections", "_host", "_port", "_reuse_address", "_send_timeout")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, send_timeout: float = SEND_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, ssl_context: ssl.SSLContext | None = None,
                 reuse_address: bool | None = None) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._send_timeout = send_timeout
        self._connections = OpenConnections(max_connections)
        self._reuse_address = reuse_address

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # set up by runner.setup()

        answer_refusals_with(server, _edu_v_refusal)

        def connection() -> GuardedConnection:
            return GuardedConnection(server(), self._send_timeout, self._connections)

        self._server = await asyncio.get_running_loop().create_server(
            connection, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address)


def service_runner(app: web.Application, *, shutdown_timeout: float = 2.0) -> web.AppRunner:
    """The runner of the register service: aiohttp's, with the service's keep-alive (`KEEPALIVE`)."""
    return web.AppRunner(app, shutdown_timeout=shutdown_timeout, keepalive_timeout=KEEPALIVE)


async def serve(app: web.Application, host: str, port: int, *, send_timeout: float = SEND_TIMEOUT,
                max_connections: int = MAX_CONNECTIONS, ssl_context: ssl.SSLContext | None = None,
                shutdown_timeout: float = 2.0) -> None:
    """Serve `app` until SIGINT or SIGTERM, then stop gracefully (what `web.run_app` does, on a guarded site)."""
    runner = service_runner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await ServiceSite(runner, host, port, send_timeout=send_timeout, max_connections=max_connections,
                          ssl_context=ssl_context).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
