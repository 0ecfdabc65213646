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
from trust.direct_identifiers import identifier_in
from trust.eckid import EckId, InvalidEckId

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.pseudonyms import Pseudonyms

# Where pseudonyms apply: ("pseudonymise", recipient OIN) on data going to a recipient, ("reveal", recipient OIN) on
# a recipient's request naming its pseudonyms; None where the service uses none.
Translation = tuple[Literal["pseudonymise", "reveal"], str] | None


def allowlist_for(service: DataService, scopes: frozenset[str] | set[str]) -> Allowlist | None:
    """The allowlist of `service` for a token with `scopes`, or None if the service restricts no attributes."""
    return service.allowlist(scopes if isinstance(scopes, frozenset) else frozenset(scopes))


async def attributes(node: Node, x: Exchange) -> None:
    """Push: the request body cut to the allowlist. Both directions: student references in the request are
    well-formed ECK iDs (translated back from the caller's pseudonyms where the service uses them)."""
    assert x.service is not None and x.token is not None and x.peer is not None
    service = x.service
    _query_without_identifiers(x)
    if service.direction is Direction.PUSH:
        payload = await request_payload(node, x, step="attributes")
        minimised = minimise(node, x, payload, scopes=x.token.scopes, locations=service.student.request)
        _replace_body(x, payload, minimised)
        x.records = _record_count(minimised, service.student.request)
        return
    for location in service.student.request:
        if location.startswith("body:"):
            payload = await request_payload(node, x, step="attributes")
            translate: Translation = ("reveal", x.peer.oin) if service.pseudonymise else None
            _replace_body(x, payload, students(node, x, payload, (location,), translate))
        else:
            for value in await reference_values(node, x, location, step="attributes"):
                _collect(x, _eck_id(value, location))


async def filter_response(node: Node, x: Exchange, body: bytes) -> bytes:
    """A pull service's JSON answer cut to the allowlist (and its student references pseudonymised for the caller
    where the service asks for it). An answer that may not travel is refused with 502: the caller's request was
    fine, the offered API's answer was not."""
    assert x.service is not None and x.token is not None and x.peer is not None
    try:
        payload = parse_json(body, what="answer of the offered API", step="attributes")
        translate: Translation = ("pseudonymise", x.peer.oin) if x.service.pseudonymise else None
        minimised = minimise(
            node, x, payload, scopes=x.token.scopes, locations=x.service.student.response, translate=translate
        )
    except Denial as exc:
        raise UpstreamUnavailable(f"the offered API's answer may not travel: {exc.message}", step="attributes") from exc
    x.records = _record_count(minimised, x.service.student.response)
    if minimised is payload:
        return body
    return json.dumps(minimised, ensure_ascii=False, separators=(",", ":")).encode()


def minimise(
    node: Node,
    x: Exchange,
    payload: Any,
    *,
    scopes: frozenset[str] | set[str],
    locations: tuple[str, ...],
    translate: Translation = None,
) -> Any:
    """`payload` (the data-carrying body) cut to the allowlist of `scopes`, searched for direct identifiers, its
    student references at body `locations` checked, collected and translated. The same object when nothing
    changed. Raises SchemaIncorrect (0011)."""
    assert x.service is not None
    service = x.service
    allowlist = allowlist_for(service, scopes)
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
    return students(node, x, result, tuple(loc for loc in locations if loc.startswith("body:")), translate)


def students(node: Node, x: Exchange, payload: Any, locations: tuple[str, ...], translate: Translation) -> Any:
    """Check the ECK iDs at body `locations` and collect them (as the source knows them, so that the school can
    look them up in the log). With `translate`, replace each by its pseudonym for a recipient, or reveal the ECK
    iD behind a recipient's pseudonym."""
    pseudonyms = node.pseudonyms if translate is not None else None
    result = payload
    for location in locations:
        path = location.removeprefix("body:")
        for value in values_at(result, path):
            if value is None:
                continue
            eck_id = _eck_id(value, location)
            if pseudonyms is not None and translate is not None and translate[0] == "reveal":
                eck_id = pseudonyms.reveal(eck_id, translate[1])
            _collect(x, eck_id)
        if pseudonyms is not None and translate is not None:
            mode, party = translate

            def change(value: Any, mode: str = mode, party: str = party, keys: Pseudonyms = pseudonyms) -> Any:
                if value is None:
                    return None
                eck_id = EckId.parse(value)
                return str(keys.pseudonymise(eck_id, party) if mode == "pseudonymise" else keys.reveal(eck_id, party))

            result = replace_at(result, path, change)
    return result


def _replace_body(x: Exchange, before: Any, after: Any) -> None:
    if after is not before:
        x.body = json.dumps(after, ensure_ascii=False, separators=(",", ":")).encode()
        x.payload = after


def _eck_id(value: Any, location: str) -> EckId:
    try:
        return EckId.parse(value)
    except InvalidEckId as exc:
        raise SchemaIncorrect(f"the student reference at {location} is not a well-formed ECK iD: {exc}",
                              step="attributes") from exc


def _query_without_identifiers(x: Exchange) -> None:
    """A query string is no place for a BSN or an e-mail address either (it also ends up in access logs)."""
    for name, value in x.request.query.items():
        found = identifier_in(name) or identifier_in(value)
        if found is not None:
            what = "a BSN/PGN" if found == "pgn" else "an e-mail address"
            shown = name if identifier_in(name) is None else "(identifier)"
            raise SchemaIncorrect(f"query parameter {shown!r} holds {what}, which may not travel", step="attributes")


def _collect(x: Exchange, eck_id: EckId) -> None:
    canonical = eck_id.canonical
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
