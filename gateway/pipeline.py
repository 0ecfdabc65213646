"""The inbound exchange, top to bottom: a list of small checks, then a durable record, then forwarding.

Each check is `check(node, exchange)`; it passes by returning and refuses by raising a typed denial
(`gateway.denials`). Read `INBOUND` to know everything the node decides, in the order it decides it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from connectors.logstore.base import LogWriteFailed
from connectors.logstore.record import ExchangeRecord
from gateway.checks.activation import activation
from gateway.checks.attributes import attributes
from gateway.checks.certificate import client_certificate, participant_admitted
from gateway.checks.head import request_head
from gateway.checks.keurmerk import keurmerk, scope
from gateway.checks.limits import request_limits
from gateway.checks.payload import reference_values
from gateway.checks.purpose import purpose
from gateway.checks.register import register_fresh
from gateway.checks.route import route
from gateway.checks.school import school
from gateway.checks.token import access_token, certificate_binding
from gateway.denials import Denial, LogUnavailable
from gateway.exchange import Exchange, InboundRequest
from gateway.forward import EXCHANGE_ID, forward
from gateway.http1 import Answer

if TYPE_CHECKING:
    from gateway.node import Node

Check = Callable[["Node", Exchange], Awaitable[None] | None]

INBOUND: tuple[Check, ...] = (
    request_limits,  # header and declared body size, before any work
    request_head,  # singleton fields once, a Host, no expectation but 100-continue
    register_fresh,  # fail closed on a stale or missing register
    client_certificate,  # chains to a CA in the register; key usage; validity; OIN
    participant_admitted,  # OIN active in the register, certificate registered to it
    access_token,  # at+jwt from this node's authorisation server: signature, iss, aud, exp, nbf
    certificate_binding,  # cnf.x5t#S256 equals the presented certificate (RFC 8705)
    route,  # method + path -> data service and upstream
    keurmerk,  # keurmerk in force for the data service in the caller's role
    scope,  # the token carries the data service's scope
    school,  # which school the exchange is about (0023 if missing or unknown)
    activation,  # the school activated this data service for this counterparty (0022)
    purpose,  # the declared purpose is allowed by the data service, the token and the activation
    attributes,  # only allowed attributes; ECK iD well-formed; no direct identifiers
)

log = structlog.get_logger("edugate.exchange")


async def run_checks(checks: Sequence[Check], node: Node, x: Exchange) -> None:
    for check in checks:
        result = check(node, x)
        if result is not None:  # an async check's coroutine (a sync check returns None)
            await result


async def handle_exchange(node: Node, request: InboundRequest) -> Answer:
    x = Exchange(request=request, now=node.clock())
    try:
        await run_checks(INBOUND, node, x)
        decision = x.record(node.oin, node.students, kind="decision", decision="allowed")
        try:
            await node.log.append(decision)
        except LogWriteFailed as exc:
            # Never forwarded unlogged (FSC's rule): no durable record, no exchange.
            raise LogUnavailable("the exchange could not be logged, so it was not forwarded", step="log") from exc

        async def complete(status: int, size: int) -> None:
            await _outcome(node, x, decision, status, size)

        return await forward(node, x, complete)
    except Denial as denial:
        return await refuse(node, x, denial)


async def _outcome(node: Node, x: Exchange, decision: ExchangeRecord, status: int, size: int) -> None:
    latency = x.elapsed_ms()
    record = x.outcome(
        decision,
        node.students,
        upstream_status=status,
        bytes_out=size,
        bytes_in=len(x.body) if x.body is not None else x.request.content_length,
        latency_ms=round(latency, 3),
    )
    try:
        await node.log.append(record)
    except LogWriteFailed:
        # The decision record is durable already; the exchange happened. Say so loudly, refuse nothing.
        log.error("outcome not logged", exchange_id=x.id)
    service = x.service.name if x.service else "-"
    node.metrics.exchange(service, "allowed", "", latency / 1000.0)
    log.info(
        "exchange",
        exchange_id=x.id,
        caller=x.caller_oin,
        data_service=service,
        school=x.school,
        purpose=x.purpose,
        upstream_status=status,
        bytes_out=size,
        ms=round(latency, 2),
    )


async def _claimed_school(node: Node, x: Exchange) -> None:
    """A refusal before the school step still belongs in that school's view: a participant that was refused
    (suspended, no keurmerk, a bad token) tried to exchange data about its students. Only for callers with a
    verified certificate, only for schools known here; best effort, so it never changes the answer."""
    if x.school is not None or x.peer is None:
        return
    try:
        if x.service is None:
            matched, x.path_params = node.routes.match(x.request.method, x.request.path)
            x.service, x.route = matched.service, matched.spec
        for location in x.service.school.request:
            for value in await reference_values(node, x, location, step="log"):
                if isinstance(value, str) and await node.activations.is_known_school(value.strip()):
                    x.school = value.strip()
                    return
    except Exception:
        return


async def refuse(node: Node, x: Exchange, denial: Denial) -> web.Response:
    """Answer a denial in the Edu-V format, and log it (who, what, which step, why) like any exchange."""
    await _claimed_school(node, x)
    latency = x.elapsed_ms()
    record = x.record(
        node.oin,
        node.students,
        kind="decision",
        decision="denied",
        step=denial.step,
        reason=denial.message,
        http_status=denial.http_status,
        edu_status=denial.edu_status,
        latency_ms=round(latency, 3),
    )
    try:
        await node.log.append(record)
    except LogWriteFailed:
        log.error("denial not logged", exchange_id=x.id, step=denial.step)
    service = x.service.name if x.service else "-"
    node.metrics.exchange(service, "denied", denial.step, latency / 1000.0)
    log.info(
        "denied",
        exchange_id=x.id,
        caller=x.caller_oin,
        data_service=service,
        step=denial.step,
        reason=denial.message,
        status=denial.http_status,
    )
    return error_response(denial, exchange_id=x.id)


def error_response(denial: Denial, *, exchange_id: str | None = None) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if exchange_id:
        headers[EXCHANGE_ID] = exchange_id
    if denial.www_authenticate:
        headers["WWW-Authenticate"] = denial.www_authenticate
    return web.json_response(denial.body(), status=denial.http_status, headers=headers)
