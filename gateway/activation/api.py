"""The consent API: activations as the school and its counterparties see them (in the spirit of Edu-V's).

    GET  /consent/v1/statuses?orgMasterId=&api=&since=   statuses, oldest change first
    GET  /consent/v1/statuses/{id}                         one status
    POST /consent/v1/requests                              a participant asks a school for an activation
    POST /consent/v1/activations                           a school activates a data service for a counterparty
    POST /consent/v1/statuses/{id}/confirm                 a school confirms a request (may narrow its purposes)
    POST /consent/v1/statuses/{id}/end                     a school sets the end date
    POST /consent/v1/statuses/{id}/revoke                  a school revokes: refused from the next exchange on

Who calls decides what they see. A school authenticates with its API key (`Authorization: ApiKey <key>`, made
with `edugate-activation key create`) and manages only its own activations. A participant authenticates with its
client certificate (mutual TLS, checked against the live register) and reads and requests only activations that
name it as the counterparty. Errors use the Edu-V body `{"status": "NNNN", "statusMessage": "..."}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from connectors.bodies import read_within
from gateway.activation.model import ORG_MASTER_ID, Activation, ProcessingAgreement
from gateway.activation.store import ActivationError, InvalidActivation, NotFoundError
from gateway.denials import (
    Denial,
    Forbidden,
    NotFound,
    RequestTimeout,
    SchemaIncorrect,
    ServiceUnavailable,
    Unauthenticated,
)
from trust.certificates import CertificateRejected
from trust.register import aware_utc

if TYPE_CHECKING:
    from gateway.node import Node

PREFIX = "/consent/v1"
log = structlog.get_logger("edugate.consent")
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Caller:
    school: str | None = None  # a school's application administrator, by API key
    participant: str | None = None  # a participant's OIN, by client certificate


def status_document(activation: Activation, now: datetime) -> dict[str, Any]:
    """An activation as the consent API shows it; `since` is when its current status began."""
    agreement = activation.processing_agreement
    return {
        "id": activation.id,
        "orgMasterId": activation.school,
        "api": activation.data_service,
        "counterparty": activation.counterparty,
        "purposes": list(activation.purposes),
        "status": activation.state(now),
        "since": _time(activation.updated_at),
        "validFrom": _time(activation.valid_from),
        "validUntil": _time(activation.valid_until),
        "processingAgreement": None
        if agreement is None
        else {
            "reference": agreement.reference,
            "validFrom": _time(agreement.valid_from),
            "validUntil": _time(agreement.valid_until),
        },
        "requestedAt": _time(activation.requested_at),
        "revokedAt": _time(activation.revoked_at),
        "revokedReason": activation.revoked_reason,
    }


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class AgreementBody(_Body):
    reference: str = Field(min_length=1, max_length=200)
    valid_from: datetime = Field(alias="validFrom")
    valid_until: datetime | None = Field(None, alias="validUntil")

    # As the stored model reads them, so a time it would refuse is a 0011 here, naming the field.
    _aware_times = field_validator("valid_from", "valid_until")(aware_utc)

    def agreement(self) -> ProcessingAgreement:
        return ProcessingAgreement(reference=self.reference, valid_from=self.valid_from, valid_until=self.valid_until)


class RequestBody(_Body):
    org_master_id: str = Field(alias="orgMasterId", pattern=ORG_MASTER_ID)
    api: str = Field(min_length=1)
    purposes: tuple[str, ...] | None = None
    valid_from: datetime | None = Field(None, alias="validFrom")
    valid_until: datetime | None = Field(None, alias="validUntil")
    processing_agreement: AgreementBody | None = Field(None, alias="processingAgreement")

    _aware_times = field_validator("valid_from", "valid_until")(aware_utc)


class GrantBody(_Body):
    counterparty: str = Field(pattern=r"^\d{20}$")
    api: str = Field(min_length=1)
    purposes: tuple[str, ...] | None = None
    valid_from: datetime | None = Field(None, alias="validFrom")
    valid_until: datetime | None = Field(None, alias="validUntil")
    processing_agreement: AgreementBody | None = Field(None, alias="processingAgreement")

    _aware_times = field_validator("valid_from", "valid_until")(aware_utc)


class ConfirmBody(_Body):
    purposes: tuple[str, ...] | None = None
    processing_agreement: AgreementBody | None = Field(None, alias="processingAgreement")


class EndBody(_Body):
    valid_until: datetime = Field(alias="validUntil")

    _aware_times = field_validator("valid_until")(aware_utc)


class RevokeBody(_Body):
    reason: str | None = Field(None, max_length=500)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConsentApi:
    def __init__(self, node: Node, body_timeout: float) -> None:
        self.node = node
        self.body_timeout = body_timeout

    # -- who is calling ------------------------------------------------------------------------------------------

    async def caller(self, request: web.Request) -> Caller:
        authorization = request.headers.get("Authorization", "")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() == "apikey":
            school = await self.node.activations.school_for_key(key.strip())
            if school is None:
                raise Unauthenticated("the school API key is unknown or revoked", step="consent")
            return Caller(school=school)
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise Unauthenticated(
                "authenticate with a school API key (Authorization: ApiKey ...) or a client certificate",
                step="consent",
            )
        holder = self.node.registers
        if holder.register is None or not holder.fresh():
            raise ServiceUnavailable("the node has no fresh register to check the certificate against", step="consent")
        now = self.node.clock()
        try:
            peer = self.node.certificates.verify(der, holder.register, now)
        except CertificateRejected as exc:
            raise Unauthenticated(f"client certificate refused: {exc}", step="consent") from exc
        participant = holder.register.participant(peer.oin)
        if participant is None or peer.thumbprint not in participant.certificates:
            raise Forbidden(f"OIN {peer.oin} has no registered participant with this certificate", step="consent")
        refusal = participant.refusal(now)
        if refusal:
            raise Forbidden(refusal, step="consent")
        return Caller(participant=participant.oin)

    # -- handlers ------------------------------------------------------------------------------------------------

    async def statuses(self, request: web.Request, caller: Caller) -> web.Response:
        query = request.query
        school = query.get("orgMasterId")
        if caller.school is not None:
            if school is not None and school != caller.school:
                raise Forbidden("a school reads only its own activations", step="consent")
            school = caller.school
        since = _parse_time(query["since"], "since") if "since" in query else None
        found = await self.node.activations.find(
            school=school, counterparty=caller.participant, data_service=query.get("api"), since=since
        )
        now = self.node.clock()
        return web.json_response({"statuses": [status_document(a, now) for a in found]})

    async def status(self, request: web.Request, caller: Caller) -> web.Response:
        activation = await self._visible(request.match_info["id"], caller)
        return web.json_response(status_document(activation, self.node.clock()))

    async def request_activation(self, request: web.Request, caller: Caller) -> web.Response:
        if caller.participant is None:
            raise Forbidden("activation requests come from participants (client certificate)", step="consent")
        body = await _body(request, self.body_timeout, RequestBody)
        purposes = self._purposes(body.api, body.purposes, caller.participant)
        created = await self.node.activations.request(
            school=body.org_master_id,
            data_service=body.api,
            counterparty=caller.participant,
            purposes=purposes,
            valid_from=body.valid_from,
            valid_until=body.valid_until,
            processing_agreement=body.processing_agreement.agreement() if body.processing_agreement else None,
        )
        return web.json_response(status_document(created, self.node.clock()), status=201)

    async def grant(self, request: web.Request, caller: Caller) -> web.Response:
        school = _school(caller)
        body = await _body(request, self.body_timeout, GrantBody)
        purposes = self._purposes(body.api, body.purposes, None)
        created = await self.node.activations.grant(
            school=school,
            data_service=body.api,
            counterparty=body.counterparty,
            purposes=purposes,
            valid_from=body.valid_from,
            valid_until=body.valid_until,
            processing_agreement=body.processing_agreement.agreement() if body.processing_agreement else None,
        )
        return web.json_response(status_document(created, self.node.clock()), status=201)

    async def confirm(self, request: web.Request, caller: Caller) -> web.Response:
        body = await _body(request, self.body_timeout, ConfirmBody)
        changed = await self.node.activations.confirm(
            request.match_info["id"],
            school=_school(caller),
            purposes=body.purposes,
            processing_agreement=body.processing_agreement.agreement() if body.processing_agreement else None,
        )
        return web.json_response(status_document(changed, self.node.clock()))

    async def end(self, request: web.Request, caller: Caller) -> web.Response:
        body = await _body(request, self.body_timeout, EndBody)
        changed = await self.node.activations.end(
            request.match_info["id"], school=_school(caller), valid_until=body.valid_until
        )
        return web.json_response(status_document(changed, self.node.clock()))

    async def revoke(self, request: web.Request, caller: Caller) -> web.Response:
        body = await _body(request, self.body_timeout, RevokeBody, allow_empty=True)
        changed = await self.node.activations.revoke(
            request.match_info["id"], school=_school(caller), reason=body.reason
        )
        return web.json_response(status_document(changed, self.node.clock()))

    # -- helpers -------------------------------------------------------------------------------------------------

    async def _visible(self, activation_id: str, caller: Caller) -> Activation:
        activation = await self.node.activations.get(activation_id)
        if caller.school not in (None, activation.school) or caller.participant not in (None, activation.counterparty):
            raise NotFoundError(f"no activation {activation_id!r}")  # others' ids are not confirmed to exist
        return activation

    def _purposes(self, api: str, requested: tuple[str, ...] | None, participant: str | None) -> tuple[str, ...]:
        service = self.node.catalogue.services.get(api)
        if service is None:
            raise SchemaIncorrect(f"api {api!r} is not a data service in this node's catalogue", step="consent")
        if participant is not None:
            register = self.node.registers.register
            entry = register.participant(participant) if register else None
            roles = (service.caller_role, service.direction.offerer_role)
            if entry is None or not any(entry.holds(api, role, self.node.clock()) for role in roles):
                raise Forbidden(f"participant {participant} holds no keurmerk for data service {api!r}", step="consent")
        if requested is None:
            return service.purposes
        for code in requested:
            if code not in service.purposes:
                raise SchemaIncorrect(
                    f"purpose {self.node.purposes.describe(code)} is not allowed for data service {api!r}",
                    step="consent",
                )
        if not requested:
            raise SchemaIncorrect("purposes may not be empty", step="consent")
        return requested

    def wrap(self, handler: Callable[[web.Request, Caller], Awaitable[web.Response]]) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request, await self.caller(request))
            except Denial as denial:
                refused, status = denial, denial.http_status
            except NotFoundError as exc:
                refused, status = NotFound(str(exc), step="consent"), 404
            except InvalidActivation as exc:
                refused, status = SchemaIncorrect(str(exc), step="consent"), 400
            except ActivationError as exc:
                refused, status = Denial(str(exc), step="consent"), 409
            log.info("consent api refused", path=request.path, status=status, reason=refused.message)
            headers = {"WWW-Authenticate": 'ApiKey realm="edugate-consent"'} if status == 401 else None
            return web.json_response(refused.body(), status=status, headers=headers)

        return run


def _school(caller: Caller) -> str:
    if caller.school is None:
        raise Forbidden("only the school manages its activations (authenticate with the school's API key)",
                        step="consent")
    return caller.school


def _parse_time(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SchemaIncorrect(f"{name} is not an RFC 3339 time", step="consent") from exc
    if parsed.tzinfo is None:
        raise SchemaIncorrect(f"{name} needs a UTC offset (RFC 3339)", step="consent")
    try:
        return parsed.astimezone(UTC)  # the store compares its UTC text with this
    except OverflowError as exc:
        raise SchemaIncorrect(f"{name} is outside the years 1 to 9999 in UTC", step="consent") from exc


T = TypeVar("T", bound=BaseModel)


async def _body(request: web.Request, seconds: float, model: type[T], *, allow_empty: bool = False) -> T:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise SchemaIncorrect(f"the request body is larger than {MAX_BODY} bytes", step="consent")
    try:
        async with asyncio.timeout(seconds):
            raw = await read_within(request.content, MAX_BODY)
    except TimeoutError as exc:
        raise RequestTimeout(f"the request body did not arrive within {seconds:g} s", step="consent") from exc
    if raw is None:
        raise SchemaIncorrect(f"the request body is larger than {MAX_BODY} bytes", step="consent")
    try:
        return model.model_validate_json(raw or (b"{}" if allow_empty else b""))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_input=False)
        )
        raise SchemaIncorrect(f"the request body is not a valid {model.__name__}: {problems}", step="consent") from exc


def add_consent_routes(app: web.Application, node: Node, *, body_timeout: float) -> None:
    """Register the consent API on the node's application (before the exchange catch-all). A request body not
    arrived within `body_timeout` seconds is refused (408)."""
    api = ConsentApi(node, body_timeout)
    app.router.add_get(f"{PREFIX}/statuses", api.wrap(api.statuses))
    app.router.add_get(f"{PREFIX}/statuses/{{id}}", api.wrap(api.status))
    app.router.add_post(f"{PREFIX}/requests", api.wrap(api.request_activation))
    app.router.add_post(f"{PREFIX}/activations", api.wrap(api.grant))
    app.router.add_post(f"{PREFIX}/statuses/{{id}}/confirm", api.wrap(api.confirm))
    app.router.add_post(f"{PREFIX}/statuses/{{id}}/end", api.wrap(api.end))
    app.router.add_post(f"{PREFIX}/statuses/{{id}}/revoke", api.wrap(api.revoke))
