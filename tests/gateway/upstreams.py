"""Upstreams for the gateway's tests: small aiohttp servers on loopback standing in for an offered API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def aiohttp_upstream(
    routes: list[web.RouteDef], *, keepalive_timeout: float = 75.0
) -> AsyncIterator[tuple[str, set[int]]]:
    """An aiohttp server; yields its base URL and the client ports it has seen (one per connection)."""
    ports: set[int] = set()

    @web.middleware
    async def note_port(request: web.Request, handler: Handler) -> web.StreamResponse:
        assert request.transport is not None
        ports.add(request.transport.get_extra_info("peername")[1])
        return await handler(request)

    app = web.Application(middlewares=[note_port])
    app.add_routes(routes)
    runner = web.AppRunner(app, keepalive_timeout=keepalive_timeout)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", ports
    finally:
        await runner.cleanup()
