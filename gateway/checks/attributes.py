"""Only the attributes the data service allows travel, keyed by well-formed ECK iDs, with no direct identifiers.

A push body is cut (or refused, per the catalogue's `extra_fields`) before it is forwarded; a pull answer is cut by
`filter_response` before it reaches the caller. The allowlist is the union of the service's paths for the
token's scopes. Removed members are counted into the log record, never their values.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from gateway.catalogue import DataService, Direction
from gateway.checks.payload import parse_json, reference_values, request_payload
from gateway.denials import Denial, SchemaIncorrect, UpstreamUnavailable
from gateway.exchange import Exchange
from gateway.minimisation import Allowlist, MinimisationRefused, replace_at, scan_identifiers, values_at
from trust.eckid import EckId, InvalidEckId

if TYPE_CHECKING:
    from gateway.node import Node

Side = Literal["request", "response"]


def allowlist_for(service: DataService, scopes: frozenset[str] | set[str]) -> Allowlist | None:
    """The allowlist of `service` for a token with `scopes`, or None if the service restricts no attributes."""
    if not service.attributes:
        return None
    return Allowlist(path for scope, paths in service.attributes.items() if scope in scopes for path in paths)


async def attributes(node: Node, x: Exchange) -> None:
    """Push: the request body cut to the allowlist. Both directions: student references in the request are
    well-formed ECK iDs (translated back from the caller's pseudonyms where the service uses them)."""
    assert x.service is not None and x.token is not None
    service = x.service
    if service.direction is Direction.PUSH:
        payload = await request_payload(node, x, step="attributes")
        minimised = _minimise(node, x, payload, "request")
        if minimised is not payload:
            x.body = json.dumps(minimised, ensure_ascii=False, separators=(",", ":")).encode()
            x.payload = minimised
        x.records = _record_count(minimised, service.student.request)
    else:
        for location in service.student.request:
            if location.startswith("body:"):
                payload = await request_payload(node, x, step="attributes")
                changed = _students(node, x, payload, (location,), "request")
                if changed is not payload:
                    x.body = json.dumps(changed, ensure_ascii=False, separators=(",", ":")).encode()
                    x.payload = changed
            else:
                for value in await reference_values(node, x, location, step="attributes"):
                    _collect(x, _eck_id(value, location, "request"))


async def filter_response(node: Node, x: Exchange, body: bytes) -> bytes:
    """A pull service's JSON answer cut to the allowlist (and its student references pseudonymised for the caller
    where the service asks for it). An answer that may not travel is refused with 502: the caller's request was
    fine, the offered API's answer was not."""
    assert x.service is not None and x.token is not None
    try:
        payload = parse_json(body, what="answer of the offered API", step="attributes")
    except SchemaIncorrect as exc:
        raise UpstreamUnavailable(exc.message, step="attributes") from exc
    try:
        minimised = _minimise(node, x, payload, "response")
    except Denial as exc:
        raise UpstreamUnavailable(f"the offered API's answer may not travel: {exc.message}", step="attributes") from exc
    x.records = _record_count(minimised, x.service.student.response)
    if minimised is payload:
        return body
    return json.dumps(minimised, ensure_ascii=False, separators=(",", ":")).encode()


def _minimise(node: Node, x: Exchange, payload: Any, side: Side) -> Any:
    """`payload` (the data-carrying body) cut, scanned, its student references checked: the same object when
    nothing changed."""
    assert x.service is not None and x.token is not None
    service = x.service
    allowlist = allowlist_for(service, x.token.scopes)
    try:
        if allowlist is None:
            scan_identifiers(payload, email_paths=service.email_fields)
            result = payload
        else:
            minimised = allowlist.minimise(
                payload, refuse_extra=service.extra_fields == "refuse", email_paths=service.email_fields
            )
            x.removed_fields += minimised.removed
            result = minimised.payload if minimised.removed else payload
    except MinimisationRefused as exc:
        raise SchemaIncorrect(str(exc), step="attributes") from exc
    locations = service.student.request if side == "request" else service.student.response
    return _students(node, x, result, tuple(loc for loc in locations if loc.startswith("body:")), side)


def _students(node: Node, x: Exchange, payload: Any, locations: tuple[str, ...], side: Side) -> Any:
    """Check the ECK iDs at body `locations`, collect them, and translate pseudonyms where the service uses them:
    an answer to the caller gets the caller's pseudonyms; a request from the caller names them and is translated
    back before it reaches the source."""
    assert x.service is not None and x.peer is not None
    translate = x.service.pseudonymise and node.pseudonyms is not None
    pseudonyms = node.pseudonyms
    caller = x.peer.oin
    result = payload
    for location in locations:
        path = location.removeprefix("body:")
        for value in values_at(result, path):
            if value is not None:
                eck_id = _eck_id(value, location, side)
                real = pseudonyms.reveal(eck_id, caller) if translate and side == "request" and pseudonyms else eck_id
                _collect(x, real)
        if translate and pseudonyms is not None:
            if side == "response":
                change = lambda v: str(pseudonyms.pseudonymise(EckId.parse(v), caller)) if v is not None else v  # noqa: E731
            else:
                change = lambda v: str(pseudonyms.reveal(EckId.parse(v), caller)) if v is not None else v  # noqa: E731
            result = replace_at(result, path, change)
    return result


def _eck_id(value: Any, location: str, side: Side) -> EckId:
    try:
        return EckId.parse(value)
    except InvalidEckId as exc:
        raise SchemaIncorrect(f"the student reference at {location} ({side}) is not a well-formed ECK iD: {exc}",
                              step="attributes") from exc


def _collect(x: Exchange, eck_id: EckId) -> None:
    canonical = EckId.from_digest(eck_id.digest).value  # one form per student, whatever case was sent
    if canonical not in x.students:
        x.students.append(canonical)


def _record_count(payload: Any, locations: tuple[str, ...]) -> int:
    """Data records carried: the items of a root array, or of the first array a student location crosses;
    otherwise one object is one record."""
    if isinstance(payload, list):
        return len(payload)
    for location in locations:
        path = location.removeprefix("body:")
        if location.startswith("body:") and "[]" in path:
            container = path.split("[]", 1)[0]
            found = values_at(payload, container) if container else [payload]
            return sum(len(v) for v in found if isinstance(v, list))
    return 1 if payload is not None else 0
