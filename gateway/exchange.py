"""The context of one exchange as it passes the checks: each check reads it and adds what it learned."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from gateway.catalogue import DataService, RouteSpec
    from trust.certificates import PeerIdentity
    from trust.register import Participant, Register
    from trust.tokens import AccessToken


@dataclass
class Exchange:
    request: web.Request
    now: datetime
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
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
