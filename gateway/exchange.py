"""The context of one exchange as it passes the checks: each check reads it and adds what it learned."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from connectors.logstore.record import ExchangeRecord
from gateway import http1

if TYPE_CHECKING:
    from connectors.logstore.students import StudentHasher
    from gateway.activation.store import VersionRead
    from gateway.catalogue import DataService, RouteSpec
    from trust.certificates import PeerIdentity
    from trust.register import Participant, Register
    from trust.tokens import AccessToken

# The exchange port's own server parses exchanges (gateway.http1); aiohttp's serves a connection handed to it.
InboundRequest = web.Request | http1.Request


class _Randomness:
    """os.urandom drawn a page at a time: one system call per 409 exchange ids instead of one per id. A forked child
    starts with none of its parent's, so that two processes never make the same ids."""

    _PAGE = 4096

    def __init__(self) -> None:
        self._bytes = b""
        self._taken = 0

    def take(self, n: int) -> bytes:
        start = self._taken
        if start + n > len(self._bytes):
            self._bytes, start = os.urandom(self._PAGE), 0
        self._taken = start + n
        return self._bytes[start : start + n]

    def forget(self) -> None:
        self._bytes, self._taken = b"", 0


_RANDOMNESS = _Randomness()
os.register_at_fork(after_in_child=_RANDOMNESS.forget)


def new_exchange_id() -> str:
    """An RFC 9562 UUIDv7: 48 bits of Unix time in milliseconds, the version, 12 random bits, the variant, 62 random
    bits. Ids made close in time sort close together, so the log's index on exchange ids grows at its right edge
    instead of touching a random page per record (measured: a 32-record SQLite commit 3.0 -> 1.4 ms once the index
    holds 32,000 ids). Made from bytes, not a 128-bit integer: 1.48 -> 0.84 us per id (timeit)."""
    r = _RANDOMNESS.take(10)
    unix_ms = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    return uuid_text(unix_ms + bytes((0x70 | r[0] & 0x0F, r[1], 0x80 | r[2] & 0x3F)) + r[3:])


def uuid_text(raw: bytes) -> str:
    """str(uuid.UUID(bytes=raw)) for 16 bytes, without building a UUID object."""
    digits = raw.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


@dataclass(slots=True)  # made for every exchange, and read by every check
class Exchange:
    request: InboundRequest
    now: datetime
    id: str = field(default_factory=new_exchange_id)
    started: float = field(default_factory=time.perf_counter)

    register: Register | None = None
    peer: PeerIdentity | None = None  # the verified client certificate: OIN and thumbprint
    participant: Participant | None = None
    token: AccessToken | None = None
    service: DataService | None = None
    route: RouteSpec | None = None
    path_params: dict[str, str] = field(default_factory=dict)
    upstream: str | None = None  # base URL of the offered API

    school: str | None = None  # organisationMasterIdentifier of the school the exchange is about
    purpose: str | None = None  # the covenant art. 5.2 code the exchange is for
    activation: Any = None
    activations_read: VersionRead | None = None  # the activation store's version, read once for this exchange

    # A body the checks had to read (push services: the attribute check); forwarded instead of the stream.
    body: bytes | None = None
    payload: Any = None  # the parsed JSON of `body`
    records: int | None = None
    removed_fields: int = 0
    students: list[str] = field(default_factory=list)  # ECK iDs seen; logged only as keyed hashes
    student_hashes: tuple[str, ...] | None = None

    @property
    def caller_oin(self) -> str | None:
        return self.peer.oin if self.peer else None

    @property
    def client_id(self) -> str | None:
        return self.token.client_id if self.token else None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def record(self, node_oin: str, students: StudentHasher, **fields: Any) -> ExchangeRecord:
        """This exchange as a log record of the node `node_oin`. `fields` add the kind, the decision and the outcome,
        or replace the inbound view (the sender side names itself as caller and the receiver as counterparty)."""
        values: dict[str, Any] = {
            "exchange_id": self.id,
            "at": self.now,
            "node": node_oin,
            "caller_oin": self.caller_oin,
            "client_id": self.client_id,
            "counterparty_oin": node_oin,
            "data_service": self.service.name if self.service else None,
            "method": self.request.method,
            "route": self.route.path if self.route else None,
            "purpose": self.purpose,
            "school": self.school,
            "records": self.records,
            "removed_fields": self.removed_fields or None,
            "student_hashes": self._student_hashes(students),
        }
        values.update(fields)
        return ExchangeRecord(**values)

    def outcome(self, decision: ExchangeRecord, students: StudentHasher, **fields: Any) -> ExchangeRecord:
        """The outcome record of an admitted exchange: its decision record with the outcome `fields`, and what the
        answer added (a pull answer's records, cut fields and students)."""
        fields.update(
            kind="outcome",
            records=self.records,
            removed_fields=self.removed_fields or None,
            student_hashes=self._student_hashes(students),
        )
        return decision.replace(**fields)

    def _student_hashes(self, students: StudentHasher) -> tuple[str, ...]:
        """The keyed hashes of the students this exchange concerns, made once for its decision and outcome."""
        if not self.school or not self.students:
            return ()
        if self.student_hashes is None or len(self.student_hashes) != len(self.students):
            self.student_hashes = tuple(students.hash(self.school, s) for s in self.students)
        return self.student_hashes
