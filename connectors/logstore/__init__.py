"""The exchange log: append-only, durable before forwarding, group-committed, tamper-evident.

`open_log(section, state_dir=..., node_oin=...)` gives the configured store (SQLite by default, PostgreSQL
for larger deployments) behind one `ExchangeLog` interface; see `connectors.logstore.base`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from connectors.logstore.base import ExchangeLog, GroupCommitLog, LogOpenFailed, LogWriteFailed, StoredRecord
from connectors.logstore.record import ExchangeRecord
from connectors.logstore.students import StudentHasher
from gateway.config import LogSection
from trust.checkpoint import SignedCheckpoint, load_or_create_signing_key

__all__ = [
    "ExchangeLog",
    "ExchangeRecord",
    "GroupCommitLog",
    "LogOpenFailed",
    "LogWriteFailed",
    "SignedCheckpoint",
    "StoredRecord",
    "StudentHasher",
    "open_log",
    "signing_key_path",
]


def signing_key_path(section: LogSection, state_dir: Path) -> Path:
    return section.signing_key or state_dir / "log-signing.key"


def open_log(section: LogSection, *, state_dir: Path, node_oin: str, **options: Any) -> GroupCommitLog:
    """The configured exchange log, not yet started (call `await log.start()`).

    The checkpoint key is `section.signing_key`, or `<state_dir>/log-signing.key` (created, Ed25519, 0600).
    Checkpoints are made every `section.checkpoint_interval` seconds when the tree grew; records older
    than `section.retention_days` are pruned (their leaf hashes stay). `options` go to the store
    (`group_commit=False` for one commit per record, `max_batch`).
    """
    key = load_or_create_signing_key(signing_key_path(section, state_dir))
    settings: dict[str, Any] = {
        "node_oin": node_oin,
        "signing_key": key,
        "checkpoint_interval": section.checkpoint_interval,
        "retention": timedelta(days=section.retention_days) if section.retention_days else None,
        **options,
    }
    if section.store == "postgresql":
        from connectors.logstore.postgres import PostgresExchangeLog

        assert section.dsn is not None  # LogSection validates this
        return PostgresExchangeLog(section.dsn, **settings)
    from connectors.logstore.sqlite import SQLiteExchangeLog

    return SQLiteExchangeLog(section.path or state_dir / "exchanges.sqlite", **settings)
