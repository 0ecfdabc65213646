"""A small federation for the identity tests: registers built from development-PKI CAs and participants."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from trust.pki import Issued
from trust.register import Register, RegisterDocument

OIN_PUBLISHER = "00000003111111110000"
OIN_DASHBOARD = "00000003222222220000"


def participant(oin: str, name: str, clients: Iterable[dict[str, Any]] = (), **extra: Any) -> dict[str, Any]:
    return {"oin": oin, "name": name, "status": "active", "clients": list(clients), **extra}


def make_register(
    *, cas: Sequence[Issued] = (), participants: Iterable[dict[str, Any]] = (), serial: int = 1
) -> Register:
    document = RegisterDocument.model_validate(
        {
            "serial": serial,
            "issued_at": datetime.now(UTC),
            "trusted_cas": [ca.cert_pem().decode() for ca in cas],
            "participants": list(participants),
        }
    )
    return Register(document)
