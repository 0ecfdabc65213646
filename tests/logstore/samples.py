"""Sample exchange records, the identities they name, and a SQLite log to hold them, shared by the exchange-log
tests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from connectors.logstore.record import ExchangeRecord
from connectors.logstore.sqlite import SQLiteExchangeLog
from trust.checkpoint import load_or_create_signing_key

NODE = "00000003273100010000"
PUBLISHER = "00000003123456780000"
OTHER_PUBLISHER = "00000003876543210000"
SCHOOL = "104A158"
OTHER_SCHOOL = "20XY001"


def record(
    *,
    school: str | None = SCHOOL,
    caller: str = PUBLISHER,
    service: str = "leermateriaalgebruik",
    purpose: str | None = "b",
    decision: str = "allowed",
    kind: str = "decision",
    at: datetime | None = None,
    students: tuple[str, ...] = (),
    records: int | None = None,
    exchange_id: str | None = None,
) -> ExchangeRecord:
    return ExchangeRecord(
        exchange_id=exchange_id or str(uuid.uuid4()),
        kind=kind,  # type: ignore[arg-type]
        at=at or datetime.now(UTC),
        node=NODE,
        caller_oin=caller,
        counterparty_oin=NODE,
        data_service=service,
        method="PUT",
        route="/v1/progress/{id}",
        purpose=purpose,
        school=school,
        decision=decision,  # type: ignore[arg-type]
        step=None if decision == "allowed" else "keurmerk",
        reason=None if decision == "allowed" else "no keurmerk",
        http_status=200 if decision == "allowed" else 403,
        records=records,
        student_hashes=students,
    )


def sqlite_log(directory: Path) -> SQLiteExchangeLog:
    """A SQLite log of NODE in `directory` (its file, and its signing key beside it), not yet started."""
    key = load_or_create_signing_key(directory / "log-signing.key")
    return SQLiteExchangeLog(directory / "exchanges.sqlite", node_oin=NODE, signing_key=key)


@contextlib.asynccontextmanager
async def started(log: SQLiteExchangeLog) -> AsyncIterator[SQLiteExchangeLog]:
    """`log` started for the block, and closed after it whatever happens inside."""
    await log.start()
    try:
        yield log
    finally:
        await log.close()
