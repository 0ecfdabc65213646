"""The register service: an aiohttp application serving nodes (snapshot, feed), the public and the operators."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from aiohttp import web

from trust.register_service import api, console, public
from trust.register_service.accounts import OperatorAccounts
from trust.register_service.pages import ENVIRONMENT, STATIC, environment
from trust.register_service.publisher import SnapshotPublisher
from trust.register_service.store import RegisterStore
from trust.snapshot import PrivateKey

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_UPLOAD = 16 * 1024 * 1024  # a register export with many certificates


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/v1/") or exc.status < 400:
            raise
        # Nodes get Edu-V error bodies, not HTML.
        response = api.edu_error(exc.status, exc.reason)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.content_type == "text/html":
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; form-action 'self'; frame-ancestors 'none'")
        if request.path.startswith("/console"):
            response.headers.setdefault("Cache-Control", "no-store")
    if request.app[console.SECURE]:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


def create_app(store: RegisterStore, operator_key: PrivateKey, *, secure_cookies: bool = True,
               heartbeat: float = 15.0, session_lifetime: timedelta = timedelta(hours=8),
               data_services: tuple[str, ...] = (), watch_interval: float = 0.2) -> web.Application:
    """The register service over `store`, signing with `operator_key`.

    `secure_cookies=False` is only for plain HTTP on loopback (tests, demo): browsers drop `Secure` cookies
    there. `heartbeat` is the feed's idle interval in seconds; `watch_interval` how often the service looks
    for changes made by other processes (the CLI).
    """
    app = web.Application(middlewares=[security_headers], client_max_size=MAX_UPLOAD)
    app[api.STORE] = store
    app[api.PUBLISHER] = SnapshotPublisher(store, operator_key)
    app[api.HEARTBEAT] = heartbeat
    app[console.ACCOUNTS] = OperatorAccounts(store, session_lifetime=session_lifetime)
    app[console.SECURE] = secure_cookies
    app[console.SERVICES] = data_services
    app[ENVIRONMENT] = environment()
    app.add_routes(api.routes() + public.routes() + console.routes())
    app.router.add_static("/static", STATIC)

    async def watch(app: web.Application) -> AsyncIterator[None]:
        await store.watch(watch_interval)
        yield

    app.cleanup_ctx.append(watch)
    return app
