"""The authorisation server of the node that offers the API: client_credentials with private_key_jwt over mTLS.

Errors carry both the OAuth fields (RFC 6749 §5.2) and the Edu-V fields, so either kind of client reads them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from connectors.bodies import read_within
from gateway.checks.certificate import client_certificate, participant_admitted
from gateway.checks.register import register_fresh
from gateway.denials import Denial
from gateway.exchange import Exchange
from gateway.purposes import PurposeRefused, allowed_purposes
from trust.tokens import TokenRejected

if TYPE_CHECKING:
    from gateway.node import Node

TOKEN_PATH = "/oauth2/token"  # noqa: S105 (a path, not a secret)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_MAX_FORM_BYTES = 16 * 1024

log = structlog.get_logger("edugate.token")


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def _error(node: Node, error: str, description: str, status: int, edu_status: str = "0099") -> web.Response:
    node.metrics.tokens.labels(error).inc()
    log.info("token refused", error=error, reason=description)
    body = {"error": error, "error_description": description, "status": edu_status, "statusMessage": description}
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="edugate"'  # RFC 6749 §5.2: 401 names a scheme
    return web.json_response(body, status=status, headers=headers)


async def token(node: Node, request: web.Request) -> web.Response:
    x = Exchange(request=request, now=node.clock())
    try:
        for check in (register_fresh, client_certificate, participant_admitted):
            check(node, x)
    except Denial as denial:
        status = 503 if denial.http_status == 503 else 401
        return _error(node, "invalid_client" if status == 401 else "temporarily_unavailable", denial.message, status)
    try:
        form = await _form(request, node.config.limits.body_timeout)
        granted_scopes, granted_purposes = await _grant(node, x, form)
    except OAuthError as exc:
        return _error(node, exc.error, exc.description, exc.status, "0021" if exc.error == "invalid_scope" else "0099")
    assert x.peer is not None and x.participant is not None and x.token is None
    client_id = form["client_id_verified"]
    access_token, expires_in = node.tokens.issue(
        client_id=client_id,
        oin=x.peer.oin,
        scopes=granted_scopes,
        purposes=granted_purposes,
        thumbprint=x.peer.thumbprint,
        now=x.now.timestamp(),
    )
    node.metrics.tokens.labels("issued").inc()
    log.info(
        "token issued",
        client_id=client_id,
        oin=x.peer.oin,
        scope=" ".join(sorted(granted_scopes)),
        purpose=" ".join(sorted(granted_purposes)),
    )
    return web.json_response(
        {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": " ".join(sorted(granted_scopes)),
            "purpose": " ".join(sorted(granted_purposes)),
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


async def not_post(node: Node, request: web.Request) -> web.Response:
    """Any method but POST at the token endpoint: 405 in the OAuth format. Without it the exchange catch-all took
    the request and answered that an access token was required, at the place a client comes to get one."""
    response = _error(node, "invalid_request", f"the token endpoint takes POST (RFC 6749 §3.2), not {request.method}",
                      405)
    response.headers["Allow"] = "POST"
    return response


async def _form(request: web.Request, seconds: float) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the token request must be application/x-www-form-urlencoded")
    if request.content_length is not None and request.content_length > _MAX_FORM_BYTES:
        raise OAuthError("invalid_request", f"the token request exceeds {_MAX_FORM_BYTES} bytes")
    try:
        async with asyncio.timeout(seconds):
            raw = await read_within(request.content, _MAX_FORM_BYTES)
    except TimeoutError as exc:
        raise OAuthError("invalid_request", f"the token request did not arrive within {seconds:g} s", 408) from exc
    if raw is None:
        raise OAuthError("invalid_request", f"the token request exceeds {_MAX_FORM_BYTES} bytes")
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError("invalid_request", "the token request body is not a valid form") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:  # RFC 6749 §3.2: parameters must not be repeated
            raise OAuthError("invalid_request", f"parameter {name!r} is repeated")
        form[name] = value
    return form


async def _grant(node: Node, x: Exchange, form: dict[str, str]) -> tuple[set[str], set[str]]:
    if form.get("grant_type") != "client_credentials":
        raise OAuthError("unsupported_grant_type", "only grant_type=client_credentials is supported")
    if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
        raise OAuthError("invalid_client", "client authentication must be private_key_jwt (RFC 7523)", 401)
    assert x.register is not None and x.peer is not None and x.participant is not None
    try:
        _, client = await node.assertions.verify(
            form["client_assertion"], peer=x.peer, register=x.register, now=x.now.timestamp()
        )
    except TokenRejected as exc:
        raise OAuthError("invalid_client", f"client assertion refused: {exc}", 401) from exc
    if form.get("client_id") not in (None, client.client_id):
        raise OAuthError("invalid_client", "client_id does not match the client assertion", 401)
    form["client_id_verified"] = client.client_id

    certified = {
        service.scope: service
        for name, service in node.catalogue.services.items()
        if name in node.config.upstreams and x.participant.holds(name, service.caller_role, x.now)
    }
    requested = set(form.get("scope", "").split()) or set(certified)
    if not requested:
        raise OAuthError("invalid_scope", "the participant holds no keurmerk for a data service offered here")
    refused = sorted(requested - set(certified))
    if refused:
        raise OAuthError("invalid_scope", f"no keurmerk in force for the data service of scope(s) {', '.join(refused)}")
    purposes = form.get("purpose", "").split()
    if not purposes:
        raise OAuthError("invalid_request", "a purpose (covenant art. 5.2 code) is required")
    try:  # each purpose must be allowed by a granted data service; the token never gets more than was asked
        granted = allowed_purposes(node.catalogue, node.purposes, [certified[s] for s in requested], purposes)
    except PurposeRefused as exc:
        raise OAuthError("invalid_request", str(exc)) from exc
    return requested, granted
