"""A school's exports: CSV for a spreadsheet, JSON with everything needed to check it offline.

The JSON export holds the records, each with an inclusion proof against a checkpoint signed at export time,
the node's earlier checkpoints with consistency proofs to that one, and the node's public log key. See
`connectors.logstore` for the offline verifier (`edugate log verify`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from connectors.logstore.base import StoredRecord
from gateway.log_api import RecordQuery, b64, checkpoint_json

if TYPE_CHECKING:
    from gateway.node import Node

PAGE = 1000
MAX_RECORDS = 100_000  # an export beyond this is asked for per period

CSV_COLUMNS = (
    "index", "exchange_id", "kind", "at", "direction", "caller_oin", "counterparty_oin", "client_id",
    "data_service", "method", "route", "purpose", "school", "decision", "step", "reason", "http_status",
    "edu_status", "upstream_status", "records", "bytes_in", "bytes_out", "removed_fields", "latency_ms",
    "student_count",
)  # fmt: skip


async def school_records(node: Node, school: str, query: RecordQuery,
                         student_hash: str | None = None) -> AsyncIterator[StoredRecord]:
    """Every record of `school` matching `query`, oldest first, page by page (at most MAX_RECORDS)."""
    offset = 0
    while offset < MAX_RECORDS:
        found = await node.log.records(school=school, student_hash=student_hash, **query.filters(),
                                       oldest_first=True, limit=PAGE, offset=offset)
        for stored in found:
            if stored.record.school == school:  # the store scoped it; checked again here all the same
                yield stored
        if len(found) < PAGE:
            return
        offset += PAGE


def csv_row(stored: StoredRecord) -> list[str]:
    data = stored.record.model_dump(mode="json")
    data["index"] = stored.index
    data["student_count"] = len(stored.record.student_hashes)  # hashes are for look-ups, not for spreadsheets
    return ["" if data.get(c) is None else str(data[c]) for c in CSV_COLUMNS]


async def export_csv(node: Node, school: str, query: RecordQuery) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    async for stored in school_records(node, school, query):
        writer.writerow(csv_row(stored))
    return out.getvalue()


async def export_json(node: Node, school: str, query: RecordQuery) -> dict[str, Any]:
    from trust.checkpoint import public_key_pem

    records = [s async for s in school_records(node, school, query)]
    final = await node.log.checkpoint()  # signs everything committed so far, so every record is covered
    earlier = [c for c in await node.log.checkpoints() if c.tree_size < final.tree_size and c.tree_size > 0]
    signing_key = getattr(node.log, "signing_key", None)
    consistency = []
    for checkpoint in earlier:
        proof = await node.log.consistency_proof(checkpoint.tree_size, final.tree_size)
        consistency.append({"first": checkpoint.tree_size, "second": final.tree_size, "proof": [b64(h) for h in proof]})
    entries = []
    for stored in records:
        proof = await node.log.inclusion_proof(stored.index, final.tree_size)
        entries.append(
            {
                "index": stored.index,
                "leaf_hash": b64(stored.leaf_hash),
                "record": stored.record.model_dump(mode="json"),
                "inclusion": {"tree_size": final.tree_size, "proof": [b64(h) for h in proof]},
            }
        )
    return {
        "format": "edugate-log-export/1",
        "encoding": "base64",
        "node": node.oin,
        "school": school,
        "exported_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "public_key": public_key_pem(signing_key).decode() if signing_key is not None else None,
        "checkpoints": [checkpoint_json(c) for c in [*earlier, final]],
        "consistency": consistency,
        "records": entries,
    }
