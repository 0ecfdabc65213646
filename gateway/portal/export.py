"""A school's exports: CSV for a spreadsheet, JSON with everything needed to check it offline.

The JSON export is the log's own export format (`connectors.logstore.export`): the records, each with an
inclusion proof against a checkpoint signed at export time, and the period's checkpoints with consistency
proofs between them. `edugate log verify EXPORT --public-key KEY` checks it offline; the key is served at
`/log/v1/public-key`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from connectors.logstore.base import GroupCommitLog, StoredRecord
from connectors.logstore.export import ExportTooLarge, build_export
from connectors.logstore.record import ExchangeRecord
from gateway.denials import TooMuchAsked
from gateway.log_api import RecordQuery

if TYPE_CHECKING:
    from gateway.node import Node

PAGE = 1000

CSV_COLUMNS = (
    "index", "exchange_id", "kind", "at", "direction", "caller_oin", "counterparty_oin", "client_id",
    "data_service", "method", "route", "purpose", "school", "decision", "step", "reason", "http_status",
    "edu_status", "upstream_status", "records", "bytes_in", "bytes_out", "removed_fields", "latency_ms",
    "student_count",
)  # fmt: skip


async def school_records(node: Node, school: str, query: RecordQuery,
                         student_hash: str | None = None) -> AsyncIterator[StoredRecord]:
    """Every record of `school` matching `query`, oldest first, page by page. Past `[log] max_export_records`
    the reader is told to ask for a shorter period (TooMuchAsked), never given a part as if it were all."""
    limit = node.config.log.max_export_records
    offset = 0
    while True:
        found = await node.log.records(school=school, student_hash=student_hash, **query.filters(),
                                       oldest_first=True, limit=PAGE, offset=offset)
        if offset + len(found) > limit:
            raise too_much(limit)
        for stored in found:
            if stored.record.school == school:  # the store scoped it; checked again here all the same
                yield stored
        if len(found) < PAGE:
            return
        offset += PAGE


def too_much(limit: int) -> TooMuchAsked:
    return TooMuchAsked(f"the period holds more than {limit} records, more than one export carries: ask for a "
                        "shorter one", step="portal")


def csv_row(stored: StoredRecord) -> list[str]:
    data = stored.record.json_form()
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


def matches(stored: StoredRecord, query: RecordQuery) -> bool:
    """The filters `build_export` does not take (it scopes by school and period), applied to its records."""
    record = stored.record
    peer = record.caller_oin if record.direction == "inbound" else record.counterparty_oin
    return all(
        wanted is None or wanted == actual
        for wanted, actual in (
            (query.counterparty, peer),
            (query.data_service, record.data_service),
            (query.purpose, record.purpose),
            (query.decision, record.decision),
            (query.exchange_id, record.exchange_id),
        )
    )


async def export_json(node: Node, school: str, query: RecordQuery) -> dict[str, Any]:
    """`connectors.logstore.export.build_export` for the school and period, narrowed to the other filters: the
    result is the log's own export format, which `edugate log verify` checks offline."""
    log = node.log
    if not isinstance(log, GroupCommitLog):
        raise TypeError("exports need the node's own exchange log")
    limit = node.config.log.max_export_records
    try:
        export = await build_export(log, school=school, since=query.since, until=query.until, max_records=limit)
    except ExportTooLarge as exc:
        raise too_much(limit) from exc
    kept = []
    for item in export["records"]:
        stored = StoredRecord(item["index"], bytes.fromhex(item["leaf_hash"]),
                              ExchangeRecord.parse_object(item["record"]))
        if stored.record.school == school and matches(stored, query):
            kept.append(item)
    export["records"] = kept
    export["scope"]["filters"] = {k: v for k, v in query.filters().items() if v is not None and k not in
                                  ("since", "until")}
    return export
