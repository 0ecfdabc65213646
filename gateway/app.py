"""The node's web application: token endpoint, discovery, health, consent API, and the exchange catch-all."""

from __future__ import annotations

import asyncio
import resource
import ssl
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import Resource

from connectors.http_refusals import answer_refusals_with
from connectors.logstore.base import LogWriteFailed
from connectors.logstore.record import ExchangeRecord
from gateway.activation.api import add_consent_routes
from gateway.denials import (
    NODE_FAILED,
    UNPARSEABLE,
    Denial,
    MethodNotAllowed,
    NodeFailed,
    NotFound,
    SchemaIncorrect,
    with_detail,
)
from gateway.exchange import new_exchange_id
from gateway.http1 import Answer, ExchangeServer, ExchangeSite, Request, node_paths_of
from gateway.log_api import add_log_routes
from gateway.node import Node
from gateway.pipeline import error_response, handle_exchange
from gateway.portal import add_portal_routes
from gateway.tls import HandshakeFailure, server_context, trust_cas
from gateway.token_endpoint import TOKEN_PATH, not_post, token

NODE = web.AppKey("node", Node)
log = structlog.get_logger("edugate.app")


def create_app(node: Node) -> web.Application:
    app = web.Application(client_max_size=node.config.limits.max_body_bytes, middlewares=[_unrouted(node)])
    app[NODE] = node

    async def token_handler(request: web.Request) -> web.StreamResponse:
        return await token(node, request)

    async def token_not_post(request: web.Request) -> web.StreamResponse:
        return await not_post(node, request)

    async def exchange_handler(request: web.Request) -> web.StreamResponse:
        response = await handle_exchange(node, request)
        assert isinstance(response, web.StreamResponse), "aiohttp's requests get aiohttp's answers"
        return response

    async def metadata(request: web.Request) -> web.Response:
        base = node.config.node.public_url
        return web.json_response(
            {  # RFC 8414
                "issuer": base,
                "token_endpoint": base + TOKEN_PATH,
                "jwks_uri": base + "/.well-known/jwks.json",
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "PS256", "RS256"],
                "tls_client_certificate_bound_access_tokens": True,
                "scopes_supported": sorted(
                    s.scope for n, s in node.catalogue.services.items() if n in node.config.upstreams
                ),
            }
        )

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(node.tokens.jwks())

    app.router.add_post(TOKEN_PATH, token_handler)
    app.router.add_route("*", TOKEN_PATH, token_not_post)  # after POST: it takes every other method
    app.router.add_get("/.well-known/oauth-authorization-server", metadata)
    app.router.add_get("/.well-known/jwks.json", jwks)
    add_health_routes(app, node)
    add_consent_routes(app, node, body_timeout=node.config.limits.body_timeout)
    add_portal_routes(app, node)
    add_log_routes(app, node)
    _refuse_other_methods(app, node)
    app.router.add_route("*", "/{tail:.*}", exchange_handler)
    return app


def _refuse_other_methods(app: web.Application, node: Node) -> None:
    """A method a node path does not take is a 405 naming those it does: without it the request fell through to the
    exchange catch-all, which refused it for want of an access token (`POST /healthz`: 401). Added after the node's
    own routes, one per path: aiohttp tries a path's routes in order, so these take only what the others do not."""
    methods: dict[str, set[str]] = {}
    for served in app.router.resources():
        if isinstance(served, Resource):  # not static files: aiohttp answers their other methods itself
            methods.setdefault(served.canonical, set()).update(route.method for route in served)
    for path, taken in methods.items():
        if hdrs.METH_ANY in taken:
            continue  # the path takes every method already (the token endpoint answers its own 405)
        allowed = ", ".join(sorted(taken))

        async def refuse(request: web.Request, allowed: str = allowed) -> web.Response:
            denial = MethodNotAllowed(f"{request.method} is not offered on this path; use {allowed}", step="route")
            _log_outside_pipeline(node, step=denial.step, reason=denial.message)
            response = error_response(denial)
            response.headers["Allow"] = allowed
            return response

        app.router.add_route(hdrs.METH_ANY, path, refuse)


def _unrouted(node: Node) -> Any:
    """aiohttp's own 404, for a target no route takes (`OPTIONS *`: the catch-all takes every path and method), in
    the Edu-V format and logged like any refusal. Everything a route takes passes untouched."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if not isinstance(getattr(request.match_info, "http_exception", None), web.HTTPException):
            response: web.StreamResponse = await handler(request)
            return response
        denial = NotFound("nothing is served at this request-target", step="route")
        _log_outside_pipeline(node, step=denial.step, reason=denial.message)
        return error_response(denial)

    return middleware


def add_health_routes(app: web.Application, node: Node) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        ready, problems = node.ready()
        return web.json_response(
            {
                "status": "ready" if ready else "not ready",
                "problems": problems,
                "register_serial": node.registers.serial,
            },
            status=200 if ready else 503,
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def create_ops_app(node: Node) -> web.Application:
    """Plain HTTP on loopback for the operator's monitoring: health and Prometheus metrics."""
    app = web.Application()
    add_health_routes(app, node)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=node.metrics.exposition(), content_type="text/plain")

    app.router.add_get("/metrics", metrics)
    return app


class _NodeRunner(web.AppRunner):
    """An AppRunner whose connections answer what aiohttp refuses by itself (a request line or headers it cannot
    parse, a handler that crashed) in the Edu-V format too, and log it as a denial at step `http`."""

    def __init__(self, app: web.Application, *, node: Node, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._node = node

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        node = self._node

        def answer(status: int, message: str | None) -> web.StreamResponse:
            denial = _refusal(status, message)
            _log_outside_pipeline(node, step=denial.step, reason=denial.message)
            return web.json_response(denial.body(), status=status, headers={"Cache-Control": "no-store"})

        answer_refusals_with(server, answer)
        return server


def _refusal(status: int, message: str | None) -> Denial:
    """What aiohttp refused by itself, as a denial: an unparseable request (400), or a failure of the node."""
    reason = UNPARSEABLE if status == 400 else NODE_FAILED
    if status < 500:
        reason = with_detail(reason, message)
    return SchemaIncorrect(reason, step="http") if status == 400 else NodeFailed(reason, step="http")


def _ops_refusal(status: int, message: str | None) -> web.StreamResponse:
    """The ops port's: the same body, logged as a line only (the port is the operator's, on loopback; its requests
    are no exchanges, so they leave no record in the exchange log)."""
    denial = _refusal(status, message)
    log.info("ops request refused", status=status, reason=denial.message)
    return web.json_response(denial.body(), status=status, headers={"Cache-Control": "no-store"})


def _log_outside_pipeline(node: Node, *, step: str, reason: str) -> None:
    """A refusal that never reached the pipeline (TLS, unparseable HTTP) still gets its record."""
    log.info("denied", step=step, reason=reason)
    record = ExchangeRecord(
        exchange_id=new_exchange_id(),
        kind="decision",
        at=node.clock(),
        node=node.oin,
        decision="denied",
        step=step,
        reason=reason,
        counterparty_oin=node.oin,
    )

    async def write() -> None:
        try:
            await node.log.append(record)
        except LogWriteFailed:
            log.error("denial not logged", step=step)

    task = asyncio.get_running_loop().create_task(write())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


@dataclass
class Served:
    """A running node: its bound port(s) and how to stop it gracefully."""

    node: Node
    runner: web.AppRunner
    port: int
    ops_runner: web.AppRunner | None = None
    ops_port: int | None = None

    async def close(self) -> None:
        # aiohttp's cleanup stops accepting, lets in-flight exchanges finish (up to the shutdown timeout),
        # then the node flushes its log and closes its stores.
        await self.runner.cleanup()
        if self.ops_runner is not None:
            await self.ops_runner.cleanup()
        await self.node.close()


def handshake_logger(node: Node) -> HandshakeFailure:
    """Refused handshakes never reach the pipeline; they are logged as denials at step 'tls' all the same."""

    def failed(exc: ssl.SSLError) -> None:
        node.metrics.handshake_failures.inc()
        reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        _log_outside_pipeline(node, step="tls", reason=f"TLS handshake refused: {reason}")

    return failed


_pending: set[asyncio.Task[None]] = set()


async def serve(
    node: Node,
    *,
    host: str | None = None,
    port: int | None = None,
    ops_port: int | None = None,
    shutdown_timeout: float = 30.0,
) -> Served:
    config = node.config
    context = server_context(config.tls.certificate, config.tls.key, on_failure=handshake_logger(node))
    if node.registers.register is not None:
        trust_cas(context, node.registers.register.trusted_ca_pems)
    node.registers.listeners.append(lambda register: trust_cas(context, register.trusted_ca_pems))
    # The parsers' own header limits sit above the node's, so the node's limit answers in the Edu-V format.
    hard_limit = max(8190, config.limits.max_header_bytes * 2)
    app = create_app(node)
    runner = _NodeRunner(
        app,
        node=node,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        max_field_size=hard_limit,
        max_line_size=hard_limit,
    )
    await runner.setup()
    assert runner.server is not None

    async def exchange(request: Request) -> Answer:
        return await handle_exchange(node, request)

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < config.limits.max_connections + 128:
        log.warning("fewer file descriptors than [limits] max_connections needs, with 128 for the node's own",
                    descriptors=soft, max_connections=config.limits.max_connections,
                    remedy="raise the limit (ulimit -n, LimitNOFILE) or lower max_connections")
    exchanges = ExchangeServer(
        exchange,
        runner.server,  # takes over connections that ask for anything but an exchange
        node_paths_of(app),
        on_refused=lambda reason: _log_outside_pipeline(node, step="http", reason=reason),
        max_line_size=hard_limit,
        max_field_size=hard_limit,
        max_head_size=2 * hard_limit,
        body_timeout=config.limits.body_timeout,
        send_timeout=config.limits.send_timeout,
        max_connections=config.limits.max_connections,
        on_turned_away=node.metrics.connections_refused.inc,
        oauth_paths=frozenset({TOKEN_PATH}),
    )
    node.metrics.connections.set_function(lambda: len(exchanges.connections))
    site = ExchangeSite(
        runner,
        exchanges,
        host or config.node.listen_host,
        config.node.listen_port if port is None else port,
        ssl_context=context,
    )
    await site.start()
    bound = _bound_port(runner)
    served = Served(node=node, runner=runner, port=bound)
    if ops_port is not None:
        ops = web.AppRunner(create_ops_app(node), access_log=None)
        await ops.setup()
        assert ops.server is not None  # made by setup()
        answer_refusals_with(ops.server, _ops_refusal)
        await web.TCPSite(ops, "127.0.0.1", ops_port).start()
        served.ops_runner, served.ops_port = ops, _bound_port(ops)
    return served


def _bound_port(runner: web.AppRunner) -> int:
    assert runner.addresses, "the site is not listening"
    return int(runner.addresses[0][1])
