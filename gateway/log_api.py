"""The log-reading API: signed checkpoints, inclusion and consistency proofs, and the records a caller may read.

Who reads what (as in FSC, a party reads only what it took part in):
- checkpoints and consistency proofs say nothing about any record: public;
- a participant, identified by its client certificate exactly as the exchange path identifies it (register
  fresh, certificate chains to a trusted CA, OIN admitted), reads the records where it was the caller or the
  counterparty, and inclusion proofs for those;
- a school, logged in to the portal, reads its own school's records and their inclusion proofs.

Routes:
- `GET /log/v1/public-key`: the PEM key checkpoints are signed with (what `edugate log verify` needs);
- `GET /log/v1/checkpoint`, `GET /log/v1/checkpoints?since=&until=`: signed checkpoints (`jws` is the proof);
- `GET /log/v1/proof/consistency?first=&second=`: RFC 9162 §2.1.4 between two tree sizes;
- `GET /log/v1/proof/inclusion?index=[&size=][&exchange_id=]`: RFC 9162 §2.1.3 for a record the caller may
  read, against the checkpoint of `size` (default: the latest, made fresh if it does not cover the record);
- `GET /log/v1/export?since=&until=`: the caller's records with proofs in the log's export format;
- `GET /log/v1/records?since=&until=&counterparty=&data_service=&purpose=&decision=&exchange_id=&limit=&offset=`
  (dates `YYYY-MM-DD` or RFC 3339 with a zone; `until` as a date includes that day; newest first).

Hashes and proofs are lowercase hex, as in the log's exports (`connectors.logstore.export`). Errors use the
Edu-V body `{"status": "NNNN", "statusMessage": "..."}`; bad parameters are `400` with status `0011`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from connectors.logstore.base import GroupCommitLog, StoredRecord
from connectors.logstore.export import ExportTooLarge, build_export
from gateway.activation.model import ORG_MASTER_ID
from gateway.checks.certificate import client_certificate, participant_admitted, peer_certificate_der
from gateway.checks.register import register_fresh
from gateway.denials import Denial, Forbidden, NotFound, SchemaIncorrect, TooMuchAsked, Unauthenticated
from gateway.exchange import Exchange
from gateway.pipeline import error_response
from trust.checkpoint import SignedCheckpoint, public_key_pem
from trust.oin import InvalidOin, parse_oin

if TYPE_CHECKING:
    from gateway.node import Node

log = structlog.get_logger("edugate.log_api")

MAX_LIMIT = 1000
_PURPOSE = re.compile(r"^[a-z]$")
_SERVICE = re.compile(r"^[a-z0-9_-]{1,64}$")
_EXCHANGE_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")


def hexed(value: bytes) -> str:
    return value.hex()


# --- who is asking ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """The scope every read is limited to: a school (portal session) or a participant (mTLS)."""

    school: str | None = None
    party_oin: str | None = None

    def __post_init__(self) -> None:
        if not self.school and not self.party_oin:  # never an unscoped reader
            raise ValueError("a reader is a school or a participant")

    def scope(self) -> dict[str, Any]:
        return {"school": self.school} if self.school else {"party_oin": self.party_oin or ""}

    def may_read(self, stored: StoredRecord) -> bool:
        record = stored.record
        if self.school:
            return record.school == self.school
        return self.party_oin in (record.caller_oin, record.counterparty_oin)


async def participant_reader(node: Node, request: web.Request) -> Reader:
    """The participant behind the client certificate, checked exactly as the exchange path checks it."""
    x = Exchange(request=request, now=node.clock())
    register_fresh(node, x)
    client_certificate(node, x)
    participant_admitted(node, x)
    assert x.peer is not None
    return Reader(party_oin=x.peer.oin)


async def reader_for(node: Node, request: web.Request) -> Reader:
    """A participant when a client certificate was presented, else the school of a portal session."""
    x = Exchange(request=request, now=node.clock())
    if peer_certificate_der(x) is not None:
        return await participant_reader(node, request)
    from gateway.portal.web import current_session  # the portal owns its sessions

    session = await current_session(request)
    if session is None:
        raise Unauthenticated(
            "log records are for a participant (client certificate) or a school logged in to the portal",
            step="log-api",
        )
    return Reader(school=session.school)


# --- parameters -----------------------------------------------------------------------------------------------


def parse_moment(name: str, value: str, *, end_of_day: bool = False) -> datetime:
    """RFC 3339 (a zone is required) or a date (`YYYY-MM-DD`, UTC; as an end: the whole day included)."""
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return day + timedelta(days=1) if end_of_day else day
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            raise SchemaIncorrect(
                f"{name}: {value!r} has no time zone (RFC 3339 needs Z or an offset)", step="log-api"
            )
        return moment.astimezone(UTC)
    except ValueError as exc:
        raise SchemaIncorrect(
            f"{name}: {value!r} is not a date (YYYY-MM-DD) or an RFC 3339 time", step="log-api"
        ) from exc
    except OverflowError as exc:  # the day after 9999-12-31, or an offset that moves a time out of 1-9999 in UTC
        raise SchemaIncorrect(f"{name}: {value!r} is outside the years 1 to 9999 in UTC", step="log-api") from exc


def parse_count(name: str, value: str | None, *, default: int | None = None, minimum: int = 0,
                maximum: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise SchemaIncorrect(f"{name} is required", step="log-api")
        return default
    if not re.fullmatch(r"\d{1,18}", value.strip()):
        raise SchemaIncorrect(f"{name} must be a whole number of at least {minimum}, got {value!r}", step="log-api")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise SchemaIncorrect(f"{name} must be {bounds}, got {number}", step="log-api")
    return number


@dataclass(frozen=True)
class RecordQuery:
    """The filters a school (portal) or a participant (API) may apply to the records it can read."""

    since: datetime | None = None
    until: datetime | None = None
    counterparty: str | None = None
    data_service: str | None = None
    purpose: str | None = None
    decision: str | None = None
    exchange_id: str | None = None
    limit: int = 100
    offset: int = 0

    @classmethod
    def parse(cls, query: Mapping[str, str], *, default_limit: int = 100) -> RecordQuery:
        """Validate query parameters; anything malformed is a SchemaIncorrect (0011) naming the parameter."""

        def text(name: str) -> str | None:
            value = query.get(name)
            return value.strip() or None if value is not None else None

        since, until = text("since") or text("from"), text("until") or text("to")
        counterparty, service, purpose = text("counterparty"), text("data_service"), text("purpose")
        decision, exchange_id = text("decision"), text("exchange_id")
        if counterparty is not None:
            try:
                parse_oin(counterparty)
            except InvalidOin as exc:
                raise SchemaIncorrect(f"counterparty: {exc}", step="log-api") from exc
        if service is not None and not _SERVICE.fullmatch(service):
            raise SchemaIncorrect(f"data_service: {service!r} is not a data service name", step="log-api")
        if purpose is not None and not _PURPOSE.fullmatch(purpose):
            raise SchemaIncorrect(f"purpose: {purpose!r} is not a purpose code (a to u)", step="log-api")
        if decision is not None and decision not in ("allowed", "denied"):
            raise SchemaIncorrect(f"decision: must be 'allowed' or 'denied', got {decision!r}", step="log-api")
        if exchange_id is not None and not _EXCHANGE_ID.fullmatch(exchange_id):
            raise SchemaIncorrect(f"exchange_id: {exchange_id!r} is not an exchange id", step="log-api")
        result = cls(
            since=parse_moment("since", since) if since else None,
            until=parse_moment("until", until, end_of_day=True) if until else None,
            counterparty=counterparty,
            data_service=service,
            purpose=purpose,
            decision=decision,
            exchange_id=exchange_id,
            limit=parse_count("limit", query.get("limit"), default=default_limit, minimum=1, maximum=MAX_LIMIT),
            offset=parse_count("offset", query.get("offset"), default=0),
        )
        if result.since and result.until and result.since >= result.until:
            raise SchemaIncorrect("since must be before until", step="log-api")
        return result

    def filters(self) -> dict[str, Any]:
        """Keyword arguments for `ExchangeLog.records` (without the reader's scope)."""
        return {
            "since": self.since,
            "until": self.until,
            "counterparty": self.counterparty,
            "data_service": self.data_service,
            "purpose": self.purpose,
            "decision": self.decision,
            "exchange_id": self.exchange_id,
        }


# --- the answers ------------------------------------------------------------------------------------------------


def record_json(stored: StoredRecord) -> dict[str, Any]:
    record = stored.record.json_form()
    return {"index": stored.index, "leaf_hash": hexed(stored.leaf_hash), "record": record}


def checkpoint_json(checkpoint: SignedCheckpoint) -> dict[str, Any]:
    return {
        "node": checkpoint.node,
        "tree_size": checkpoint.tree_size,
        "root_hash": hexed(checkpoint.root_hash),
        "timestamp": checkpoint.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "jws": checkpoint.jws,
    }


async def record_at(node: Node, reader: Reader, index: int, exchange_id: str | None = None) -> StoredRecord:
    """The record at `index` if the reader may read it; otherwise NotFound, the same as for no record at all
    (so a reader learns nothing about other parties' records). With the record's `exchange_id` it is one
    look-up; without, the reader's own records are read in index order up to `index`."""
    if exchange_id is not None:
        for stored in await node.log.records(**reader.scope(), exchange_id=exchange_id, limit=10):
            if stored.index == index and reader.may_read(stored):
                return stored
    elif 0 <= index < node.log.size():
        page, offset = 500, 0
        while True:  # the reader's records come in index order; stop once past `index`
            found = await node.log.records(**reader.scope(), oldest_first=True, limit=page, offset=offset)
            for stored in found:
                if stored.index == index and reader.may_read(stored):
                    return stored
            if len(found) < page or (found and found[-1].index > index):
                break
            offset += page
    raise NotFound(f"no record {index} that this caller may read", step="log-api")


async def checkpoint_covering(node: Node, size: int | None, index: int) -> SignedCheckpoint | None:
    """A stored checkpoint of exactly `size` (or the latest, made fresh when it does not cover `index` yet)."""
    if size is None:
        latest = await node.log.latest_checkpoint()
        if latest is None or latest.tree_size <= index:
            latest = await node.log.checkpoint()
        return latest
    for checkpoint in reversed(await node.log.checkpoints()):
        if checkpoint.tree_size == size:
            return checkpoint
    return None


async def inclusion_json(node: Node, stored: StoredRecord, size: int | None = None) -> dict[str, Any]:
    checkpoint = await checkpoint_covering(node, size, stored.index)
    tree_size = size if size is not None else (checkpoint.tree_size if checkpoint else node.log.size())
    if not stored.index < tree_size <= node.log.size():
        raise SchemaIncorrect(
            f"size must be more than the record's index {stored.index} and at most the log's size {node.log.size()}",
            step="log-api",
        )
    proof = await node.log.inclusion_proof(stored.index, tree_size)
    return {
        "index": stored.index,
        "tree_size": tree_size,
        "leaf_hash": hexed(stored.leaf_hash),
        "proof": [hexed(h) for h in proof],
        "checkpoint": checkpoint_json(checkpoint) if checkpoint else None,
        "encoding": "hex",
    }


def _readable(reader: Reader, record: Mapping[str, Any]) -> bool:
    if reader.school:
        return record.get("school") == reader.school
    return reader.party_oin in (record.get("caller_oin"), record.get("counterparty_oin"))


# --- routes -----------------------------------------------------------------------------------------------------


def add_log_routes(app: web.Application, node: Node) -> None:
    def answers_denials(handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response: web.StreamResponse = await handler(request)
            except Denial as denial:
                log.info("log api refused", path=request.path, step=denial.step, reason=denial.message,
                         status=denial.http_status)
                return error_response(denial)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return wrapped

    async def latest(request: web.Request) -> web.Response:
        checkpoint = await node.log.latest_checkpoint()
        if checkpoint is None:
            raise NotFound("the log has no checkpoint yet", step="log-api")
        return web.json_response(checkpoint_json(checkpoint))

    async def checkpoints(request: web.Request) -> web.Response:
        since, until = request.query.get("since"), request.query.get("until")
        found = await node.log.checkpoints(
            since=parse_moment("since", since) if since else None,
            until=parse_moment("until", until, end_of_day=True) if until else None,
        )
        return web.json_response({"checkpoints": [checkpoint_json(c) for c in found]})

    async def inclusion(request: web.Request) -> web.Response:
        reader = await reader_for(node, request)
        index = parse_count("index", request.query.get("index"))
        size_text = request.query.get("size")
        size = parse_count("size", size_text, minimum=1) if size_text else None
        exchange_id = RecordQuery.parse({"exchange_id": request.query.get("exchange_id", "")}).exchange_id
        stored = await record_at(node, reader, index, exchange_id)
        return web.json_response(await inclusion_json(node, stored, size))

    async def consistency(request: web.Request) -> web.Response:
        first = parse_count("first", request.query.get("first"))
        second = parse_count("second", request.query.get("second"))
        if not first <= second <= node.log.size():
            raise SchemaIncorrect(f"need first <= second <= {node.log.size()} (the log's size)", step="log-api")
        proof = await node.log.consistency_proof(first, second)
        return web.json_response(
            {"first": first, "second": second, "proof": [hexed(h) for h in proof], "encoding": "hex"}
        )

    async def records(request: web.Request) -> web.Response:
        reader = await reader_for(node, request)
        if reader.school and request.query.get("school", reader.school) != reader.school:
            raise Forbidden("a school reads only its own records", step="log-api")
        query = RecordQuery.parse(request.query)
        extra: dict[str, Any] = {}
        if reader.party_oin and request.query.get("school"):
            school = request.query["school"]
            if not re.fullmatch(ORG_MASTER_ID, school):
                raise SchemaIncorrect(f"school: {school!r} is not an organisationMasterIdentifier", step="log-api")
            extra["school"] = school  # a participant may narrow to one school
        found = await node.log.records(
            **reader.scope(), **extra, **query.filters(), limit=query.limit, offset=query.offset
        )
        return web.json_response(
            {
                "records": [record_json(s) for s in found if reader.may_read(s)],
                "limit": query.limit,
                "offset": query.offset,
                "tree_size": node.log.size(),
            }
        )

    async def public_key(request: web.Request) -> web.Response:
        key = getattr(node.log, "signing_key", None)
        if key is None:
            raise NotFound("this log has no signing key to publish", step="log-api")
        return web.Response(body=public_key_pem(key), content_type="application/x-pem-file")

    async def export(request: web.Request) -> web.Response:
        """The reader's records of a period with proofs, in the log's export format (`edugate log verify`)."""
        reader = await reader_for(node, request)
        if reader.school and request.query.get("school", reader.school) != reader.school:
            raise Forbidden("a school reads only its own records", step="log-api")
        query = RecordQuery.parse({k: v for k, v in request.query.items() if k in ("since", "until")})
        log_store = node.log
        if not isinstance(log_store, GroupCommitLog):
            raise NotFound("this log cannot export", step="log-api")
        limit = node.config.log.max_export_records
        try:
            document = await build_export(log_store, **reader.scope(), since=query.since, until=query.until,
                                          max_records=limit)
        except ExportTooLarge as exc:
            raise TooMuchAsked(f"the period holds {exc}: ask for a shorter one (since, until)", step="log-api") from exc
        document["records"] = [r for r in document["records"] if _readable(reader, r["record"])]
        return web.json_response(document)

    app.router.add_get("/log/v1/public-key", answers_denials(public_key))
    app.router.add_get("/log/v1/export", answers_denials(export))
    app.router.add_get("/log/v1/checkpoint", answers_denials(latest))
    app.router.add_get("/log/v1/checkpoints", answers_denials(checkpoints))
    app.router.add_get("/log/v1/proof/inclusion", answers_denials(inclusion))
    app.router.add_get("/log/v1/proof/consistency", answers_denials(consistency))
    app.router.add_get("/log/v1/records", answers_denials(records))
