"""One exchange-log record: a leaf of the node's Merkle tree.

An exchange yields a `decision` record (durable before anything is forwarded; for a denial it is the
only one) and, once answered, an `outcome` record with the upstream status, sizes and latency.
Records never hold a student identifier in clear: only keyed hashes (a key per school).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExchangeRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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
    student_hashes: tuple[str, ...] = Field(default=())  # HMAC-SHA256(school key, ECK iD), hex
