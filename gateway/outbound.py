"""The sender side: a participant's own applications send through their node, which checks before anything leaves.

An application calls the node over plain HTTP on loopback (or an internal network listed in
`[outbound] allowed_networks`) with the catalogue route it means (`PUT /v1/progress/{id}`), the receiver's OIN in
`Edu-Receiver` and the purpose in `Edu-Purpose`. The node then, top to bottom:

    register fresh → own participant admitted, with a keurmerk for the service in the sender's role (Verzender
    for push, Afnemer for pull) → receiver in the register, admitted, with the offering keurmerk (Ontvanger /
    Bron) and endpoints → school → activation recorded here for (school, service, receiver) → purpose (allowed
    by the service and covered by the activation) → attributes (a push body cut to the allowlist, ECK iDs
    checked, direct identifiers refused, per-receiver pseudonyms where the service asks) → access token from the
    receiver's token endpoint (private_key_jwt over mTLS, cached until shortly before it expires) → log
    (durable, `direction = "outbound"`) → forward with the node's client certificate → log the outcome.

A refusal answers the application in the Edu-V body format and is logged like one on the receiving side.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from multidict import CIMultiDict

from connectors.bodies import read_within
from connectors.logstore.base import LogWriteFailed
from gateway.catalogue import DataService, Direction, RouteSpec
from gateway.checks.activation import admitting
from gateway.checks.attributes import Translation, minimise
from gateway.checks.payload import read_body, request_payload
from gateway.checks.purpose import PURPOSE_HEADER, covering_activation
from gateway.checks.register import register_fresh
from gateway.checks.school import school
from gateway.config import ConfigError
from gateway.denials import (
    Denial,
    Forbidden,
    LogUnavailable,
    MethodNotAllowed,
    NotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.exchange import Exchange
from gateway.forward import CLIENT_ONLY, CLIENT_ONLY_PREFIXES, EXCHANGE_ID, HOP_BY_HOP
from gateway.tls import client_context
from trust.oin import InvalidOin, parse_oin
from trust.register import Participant
from trust.tokens import MAX_ACCESS_TOKEN_LIFETIME, make_client_assertion

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

    from gateway.config import OutboundSection
    from gateway.node import Node

RECEIVER_HEADER = "Edu-Receiver"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_TOKEN_ANSWER = 64 * 1024  # a token answer is a few hundred bytes; more is not read
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1: what may follow "Bearer " in our request

log = structlog.get_logger("edugate.outbound")


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: Any
    spec: RouteSpec
    service: DataService


@dataclass
class _Token:
    value: str
    renew_at: float


@dataclass
class Sender:
    """The outbound half of a node. `handle` is the aiohttp handler; `close` releases the client session."""

    node: Node
    section: OutboundSection
    _routes: list[_Route] = field(default_factory=list)
    _tokens: dict[tuple[str, str, str], _Token] = field(default_factory=dict)
    _token_locks: dict[tuple[str, str, str], asyncio.Lock] = field(default_factory=dict)
    _session: tuple[int, aiohttp.ClientSession] | None = None
    _key: Any = None
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def __post_init__(self) -> None:
        self._routes = [
            _Route(spec.method, spec.compile(), spec, service)
            for service in self.node.catalogue.services.values()
            for spec in service.routes
        ]
        tls = self.node.config.tls
        self._key = _load_key((tls.client_key or tls.key).read_bytes())
        self._networks = tuple(ipaddress.ip_network(n) for n in self.section.allowed_networks)

    async def close(self) -> None:
        if self._session is not None:
            await self._session[1].close()
            self._session = None

    # -- the handler -----------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        node = self.node
        x = Exchange(request=request, now=node.clock())
        receiver: Participant | None = None
        try:
            self._local(request)
            register_fresh(node, x)
            self._own(x)
            self._route(x)
            receiver = self._receiver(x)
            await school(node, x)
            x.activation = await admitting(node, x, receiver.oin)
            x.purpose = await self._purpose(x)
            await self._attributes(x, receiver)
            token = await self._token(x, receiver)
            await self._log(x, receiver, kind="decision", decision="allowed")
            return await self._forward(x, receiver, token)
        except Denial as denial:
            await self._log(
                x, receiver, kind="decision", decision="denied", step=denial.step, reason=denial.message,
                http_status=denial.http_status, edu_status=denial.edu_status,
            )  # fmt: skip
            log.info("outbound denied", exchange_id=x.id, step=denial.step, reason=denial.message)
            headers = {EXCHANGE_ID: x.id, "Cache-Control": "no-store"}
            return web.json_response(denial.body(), status=denial.http_status, headers=headers)

    # -- the steps ---------------------------------------------------------------------------------------------------

    def _local(self, request: web.Request) -> None:
        """Only this participant's own applications: loopback or the configured internal networks."""
        try:
            address = ipaddress.ip_address(request.remote or "")
        except ValueError:
            address = None
        if address is None or not any(address in network for network in self._networks):
            raise Forbidden("the sender side takes calls from this participant's own network only", step="outbound")

    def _own(self, x: Exchange) -> None:
        assert x.register is not None
        own = x.register.participant(self.node.oin)
        if own is None:
            raise Forbidden(f"this node's participant {self.node.oin} is not in the register", step="participant")
        refusal = own.refusal(x.now)
        if refusal:
            raise Forbidden(refusal, step="participant")
        x.participant = own

    def _route(self, x: Exchange) -> None:
        path = x.request.path
        allowed: list[str] = []
        for route in self._routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method != x.request.method:
                allowed.append(route.method)
                continue
            x.service, x.route, x.path_params = route.service, route.spec, found.groupdict()
            break
        else:
            if allowed:
                raise MethodNotAllowed(
                    f"{x.request.method} is not allowed here; use {', '.join(allowed)}", step="route"
                )
            raise NotFound(f"no data service at {path}", step="route")
        assert x.participant is not None and x.service is not None
        role = x.service.caller_role
        if not x.participant.holds(x.service.name, role, x.now):
            raise Forbidden(
                f"this participant holds no keurmerk in force for data service {x.service.name!r} in role {role.value}",
                step="keurmerk",
            )

    def _receiver(self, x: Exchange) -> Participant:
        assert x.register is not None and x.service is not None
        named = x.request.headers.get(RECEIVER_HEADER, "").strip()
        try:
            oin = parse_oin(named)
        except InvalidOin as exc:
            raise Denial(f"name the receiver's OIN in {RECEIVER_HEADER}: {exc}", step="receiver") from exc
        receiver = x.register.participant(oin)
        if receiver is None:
            raise Forbidden(f"receiver {oin} is not a participant in the register", step="receiver")
        refusal = receiver.refusal(x.now)
        if refusal:
            raise Forbidden(refusal, step="receiver")
        role = x.service.direction.offerer_role
        if not receiver.holds(x.service.name, role, x.now):
            raise Forbidden(
                f"receiver {oin} holds no keurmerk in force for data service {x.service.name!r} in role {role.value}",
                step="receiver",
            )
        if not receiver.endpoints.api or not receiver.endpoints.token:
            raise Forbidden(f"the register lists no API and token endpoints for receiver {oin}", step="receiver")
        return receiver

    async def _purpose(self, x: Exchange) -> str:
        assert x.service is not None and x.activation is not None
        declared = [value.strip() for value in x.request.headers.getall(PURPOSE_HEADER, [])]
        covered = [code for code in x.service.purposes if code in x.activation.purposes]
        if len(declared) > 1:
            raise Denial(f"declare exactly one purpose in {PURPOSE_HEADER}", step="purpose")
        if not declared or not declared[0]:
            if len(covered) != 1:
                raise Forbidden(
                    f"declare the purpose of this exchange in {PURPOSE_HEADER} (the activation covers "
                    f"{', '.join(covered) or 'none'})",
                    step="purpose",
                )
            return covered[0]
        code = declared[0]
        what = self.node.purposes.describe(code)
        if code not in self.node.purposes or code not in x.service.purposes:
            raise Forbidden(f"purpose {what} is not allowed for data service {x.service.name!r}", step="purpose")
        x.activation = await covering_activation(self.node, x, code)
        return code

    async def _attributes(self, x: Exchange, receiver: Participant) -> None:
        service = x.service
        assert service is not None
        if service.direction is not Direction.PUSH:
            return
        payload = await request_payload(self.node, x, step="attributes")
        translate: Translation = ("pseudonymise", receiver.oin) if service.pseudonymise else None
        minimised = minimise(
            self.node, x, payload, scopes={service.scope}, locations=service.student.request,
            translate=translate,
        )  # fmt: skip
        if minimised is not payload:
            x.body = json.dumps(minimised, ensure_ascii=False, separators=(",", ":")).encode()
            x.payload = minimised
        x.records = 1 if isinstance(minimised, dict) else len(minimised) if isinstance(minimised, list) else 0

    # -- tokens ------------------------------------------------------------------------------------------------------

    async def _client(self, x: Exchange) -> aiohttp.ClientSession:
        """An mTLS session trusting the register's CAs; rebuilt when a newer register is in force."""
        assert x.register is not None
        if self._session is not None and self._session[0] == x.register.serial:
            return self._session[1]
        tls = self.node.config.tls
        context = client_context(
            ca_pems=x.register.trusted_ca_pems,
            certificate=tls.client_certificate or tls.certificate,
            key=tls.client_key or tls.key,
        )
        limits = self.node.config.limits
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=limits.upstream_connections),
            timeout=aiohttp.ClientTimeout(total=limits.upstream_timeout),
        )
        if self._session is not None:
            await self._session[1].close()
        self._session = (x.register.serial, session)
        return session

    async def _token(self, x: Exchange, receiver: Participant, *, fresh: bool = False) -> str:
        assert x.service is not None and x.purpose is not None
        key = (receiver.oin, x.service.scope, x.purpose)
        lock = self._token_locks.setdefault(key, asyncio.Lock())
        async with lock:  # one token request per receiver, scope and purpose at a time
            cached = self._tokens.get(key)
            if cached is not None and not fresh and time.monotonic() < cached.renew_at:
                return cached.value
            endpoint = receiver.endpoints.token
            assert endpoint is not None
            assertion = make_client_assertion(
                client_id=self.section.client_id, audience=endpoint, key=self._key, kid=self.section.kid
            )
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
                "scope": x.service.scope,
                "purpose": x.purpose,
            }
            session = await self._client(x)
            try:
                async with session.post(endpoint, data=form, allow_redirects=False) as answer:
                    raw = await read_within(answer.content, MAX_TOKEN_ANSWER)
                    status = answer.status
            except TimeoutError as exc:
                raise UpstreamTimeout(f"receiver {receiver.oin}'s token endpoint did not answer", step="token") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise UpstreamUnavailable(
                    f"receiver {receiver.oin}'s token endpoint cannot be reached: {type(exc).__name__}", step="token"
                ) from exc
            token, lifetime = _issued_token(receiver.oin, status, raw)
            self._tokens[key] = _Token(token, time.monotonic() + lifetime - self.section.token_margin)
            return token

    # -- forwarding --------------------------------------------------------------------------------------------------

    def _headers(self, x: Exchange, token: str) -> CIMultiDict[str]:
        incoming = x.request.headers
        dropped = HOP_BY_HOP | CLIENT_ONLY
        headers: CIMultiDict[str] = CIMultiDict(
            (name, value)
            for name, value in incoming.items()
            if name.lower() not in dropped and not name.lower().startswith(CLIENT_ONLY_PREFIXES)
        )
        if x.body is not None:
            headers.popall("Content-Length", None)
        headers["Authorization"] = f"Bearer {token}"
        assert x.purpose is not None
        headers[PURPOSE_HEADER] = x.purpose
        return headers

    async def _forward(self, x: Exchange, receiver: Participant, token: str) -> web.StreamResponse:
        assert receiver.endpoints.api is not None
        url = receiver.endpoints.api.rstrip("/") + x.request.rel_url.raw_path_qs
        limit = self.node.config.limits.max_body_bytes
        if x.request.body_exists:
            await read_body(self.node, x, step="limits")
        session = await self._client(x)
        for attempt in (1, 2):
            try:
                async with session.request(
                    x.request.method, url, headers=self._headers(x, token), data=x.body, allow_redirects=False
                ) as answer:
                    answered = await read_within(answer.content, limit)
                    status, upstream_headers = answer.status, answer.headers
            except TimeoutError as exc:
                raise UpstreamTimeout(f"receiver {receiver.oin} did not answer in time", step="forward") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise UpstreamUnavailable(
                    f"receiver {receiver.oin} cannot be reached: {type(exc).__name__}", step="forward"
                ) from exc
            if answered is None:
                raise UpstreamUnavailable("the receiver's answer exceeds the size limit", step="forward")
            body = answered
            # A receiver that restarted no longer knows our token: get a new one, once.
            if status == 401 and attempt == 1 and "invalid_token" in upstream_headers.get("WWW-Authenticate", ""):
                token = await self._token(x, receiver, fresh=True)
                continue
            break
        await self._log(
            x,
            receiver,
            kind="outcome",
            decision="allowed",
            upstream_status=status,
            bytes_out=len(body),
            bytes_in=len(x.body) if x.body is not None else 0,
            latency_ms=round(x.elapsed_ms(), 3),
        )
        log.info(
            "outbound",
            exchange_id=x.id,
            receiver=receiver.oin,
            data_service=x.service.name if x.service else None,
            status=status,
            ms=round(x.elapsed_ms(), 2),
        )
        dropped = HOP_BY_HOP | {"content-length", "transfer-encoding", "set-cookie"}
        headers = CIMultiDict((k, v) for k, v in upstream_headers.items() if k.lower() not in dropped)
        headers[EXCHANGE_ID] = x.id
        return web.Response(status=status, body=body, headers=headers)

    # -- the log -----------------------------------------------------------------------------------------------------

    async def _log(self, x: Exchange, receiver: Participant | None, **fields: Any) -> None:
        node = self.node
        record = x.record(
            node.oin,
            node.students,
            direction="outbound",
            caller_oin=node.oin,
            client_id=self.section.client_id,
            counterparty_oin=receiver.oin if receiver else None,
            **fields,
        )
        try:
            await node.log.append(record)
        except LogWriteFailed as exc:
            if fields.get("kind") == "decision" and fields.get("decision") == "allowed":
                # Nothing leaves unlogged.
                raise LogUnavailable("the exchange could not be logged, so it was not sent", step="log") from exc
            log.error("outbound record not logged", exchange_id=x.id)


def _issued_token(receiver: str, status: int, raw: bytes | None) -> tuple[str, float]:
    """The access token and the seconds it may be cached, from a receiver's token endpoint answer. A refusal is 403;
    an answer that is no token answer at all (too large, not JSON, a token that cannot go in a header, a lifetime
    that is no positive number) is the receiver's fault: 502, with what was wrong."""
    if raw is None:
        raise UpstreamUnavailable(
            f"receiver {receiver}'s token endpoint answered more than {MAX_TOKEN_ANSWER} bytes", step="token"
        )
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # 64 KiB of brackets nest past the interpreter's limit
        body = None
    if not isinstance(body, dict):
        if status == 200:
            raise UpstreamUnavailable(f"receiver {receiver}'s token endpoint answered no JSON object", step="token")
        body = {}
    token = body.get("access_token")
    if status != 200 or not isinstance(token, str):
        # The receiver's words go into the log and the answer: cut to a length that carries an OAuth error.
        error, description = str(body.get("error", "no error code"))[:80], str(body.get("error_description", ""))[:200]
        raise Forbidden(f"receiver {receiver} refused an access token ({status} {error}): {description}", step="token")
    if not _B64TOKEN.fullmatch(token):
        raise UpstreamUnavailable(
            f"receiver {receiver}'s token endpoint answered an access_token that is not a bearer token (RFC 6750)",
            step="token",
        )
    lifetime = body.get("expires_in", 60)
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or not 0 < lifetime < float("inf"):
        raise UpstreamUnavailable(
            f"receiver {receiver}'s token endpoint answered expires_in {lifetime!r}, not a positive number of seconds",
            step="token",
        )
    # Kept no longer than a token of this federation may live, whatever the receiver says.
    return token, float(min(lifetime, MAX_ACCESS_TOKEN_LIFETIME))


def _load_key(pem: bytes) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(pem, password=None)


def outbound_app(sender: Sender) -> web.Application:
    app = web.Application(client_max_size=sender.node.config.limits.max_body_bytes + 1)
    app.router.add_route("*", "/{tail:.*}", sender.handle)
    return app


@dataclass
class OutboundServed:
    sender: Sender
    runner: web.AppRunner
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.sender.close()


async def serve_outbound(node: Node, *, host: str | None = None, port: int | None = None) -> OutboundServed:
    """Listen for this participant's applications (plain HTTP) as `[outbound]` in the node config says."""
    section = node.config.outbound
    if section is None:
        raise ConfigError("the node config has no [outbound] section")
    sender = Sender(node, section)
    runner = web.AppRunner(outbound_app(sender), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or section.listen_host, section.listen_port if port is None else port)
    await site.start()
    assert runner.addresses, "the outbound site is not listening"
    return OutboundServed(sender, runner, int(runner.addresses[0][1]))
