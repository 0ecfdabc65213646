"""One exchange-log record: a leaf of the node's Merkle tree.

An exchange yields a `decision` record (durable before anything is forwarded; for a denial it is the
only one) and, once answered, an `outcome` record with the upstream status, sizes and latency.
Records never hold a student identifier in clear: only keyed hashes (a key per school).

A record is a msgspec Struct rather than a pydantic model: the node makes two per exchange on its event loop,
and a validated pydantic record, its copy for the outcome and their encoding cost the node 6.8% of its
instructions per exchange (`bench/exchange_instructions.py`). The node fills records from values it computed
itself, so construction checks only what types do not say (the closed sets of `kind`, `decision` and
`direction`); whatever is read back (`parse_json`, `parse_object`) is validated field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

_KINDS = frozenset({"decision", "outcome"})
_DECISIONS = frozenset({"allowed", "denied"})
_DIRECTIONS = frozenset({"inbound", "outbound"})


class ExchangeRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    exchange_id: str
    kind: Literal["decision", "outcome"]
    at: datetime
    node: str  # the OIN of the node that logged it
    direction: Literal["inbound", "outbound"] = "inbound"
    caller_oin: str | None = None  # who called (inbound) / this node's participant (outbound)
    client_id: str | None = None
    counterparty_oin: str | None = None  # the other party: the offerer (inbound: this node's OIN) or receiver
    data_service: str | None = None
    method: str | None = None
    route: str | None = None  # the catalogue's path template, not the concrete path (no ids in clear)
    purpose: str | None = None
    school: str | None = None  # organisationMasterIdentifier
    decision: Literal["allowed", "denied"]
    step: str | None = None  # the check that refused
    reason: str | None = None
    http_status: int | None = None
    edu_status: str | None = None
    upstream_status: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    records: int | None = None  # data records carried
    removed_fields: int | None = None  # attributes cut by the allowlist (counted, never their values)
    latency_ms: float | None = None
    student_hashes: tuple[str, ...] = ()  # HMAC-SHA256(school key, ECK iD), hex

    def __post_init__(self) -> None:
        if self.kind not in _KINDS or self.decision not in _DECISIONS or self.direction not in _DIRECTIONS:
            raise ValueError(
                f"not a log record: kind {self.kind!r}, decision {self.decision!r}, direction {self.direction!r}"
            )
        if type(self.latency_ms) is int:  # a float field: written as a float, so that it reads back the same
            msgspec.structs.force_setattr(self, "latency_ms", float(self.latency_ms))
        if type(self.student_hashes) is not tuple:
            msgspec.structs.force_setattr(self, "student_hashes", tuple(self.student_hashes))

    @classmethod
    def parse_json(cls, body: bytes) -> ExchangeRecord:
        """A record from its JSON encoding (a stored body), every field validated. Raises msgspec.ValidationError
        or msgspec.DecodeError."""
        return msgspec.json.decode(body, type=cls)

    @classmethod
    def parse_object(cls, value: Mapping[str, Any]) -> ExchangeRecord:
        """A record from its JSON form (`json_form`, as found in an export), every field validated."""
        return msgspec.convert(value, cls)

    def json_form(self) -> dict[str, Any]:
        """The record as a JSON object: datetimes as RFC 3339 strings, the student hashes as an array."""
        form: dict[str, Any] = msgspec.to_builtins(self)
        form["student_hashes"] = list(self.student_hashes)
        return form

    def replace(self, **changes: Any) -> ExchangeRecord:
        """A copy with `changes` (the outcome record is its decision record with the outcome fields)."""
        return msgspec.structs.replace(self, **changes)
