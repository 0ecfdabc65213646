"""Exports a school (or participant) can check offline: records, inclusion proofs, checkpoints, consistency.

Format (`edugate-log-export/1`), one JSON object; hashes are lowercase hex:

    {
      "format": "edugate-log-export/1",
      "node": "<OIN of the node whose log this is>",
      "scope": {"school": "104A158" | null, "party_oin": "<OIN>" | null,
                "since": "<RFC 3339>" | null, "until": "<RFC 3339>" | null},
      "exported_at": "<RFC 3339>",
      "checkpoints": ["<compact JWS, see trust.checkpoint>", ...],      # oldest first
      "consistency": [{"size1": 10, "size2": 25, "proof": ["<hex>", ...]}, ...],
                     # one per pair of consecutive checkpoints, RFC 9162 §2.1.4
      "records": [{"index": 17, "leaf_hash": "<hex>", "record": {...the record's JSON...},
                   "inclusion_proof": ["<hex>", ...]}, ...]
                     # oldest first; each proof is against the LAST checkpoint (RFC 9162 §2.1.3)
    }

A record's leaf hash is SHA-256(0x00 || canonical JSON of "record"): keys sorted, no whitespace, UTF-8
(`connectors.logstore.leaf`). `verify_export` checks every part against the node's public key and
returns a list of problems, each naming what failed; an empty list means the export is sound.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from connectors.logstore.base import GroupCommitLog
from connectors.logstore.leaf import record_leaf_hash
from trust.checkpoint import CheckpointRejected, PublicKey, SignedCheckpoint, verify_checkpoint
from trust.transparency import ProofError, verify_consistency, verify_inclusion

EXPORT_FORMAT = "edugate-log-export/1"
_PAGE = 1000


class ExportTooLarge(ValueError):
    """The scope holds more records than the export may carry; raised before more are read, so that memory stays
    bounded. The reader asks for a shorter period."""


def _time(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


async def build_export(
    log: GroupCommitLog,
    *,
    school: str | None = None,
    party_oin: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    max_records: int | None = None,
) -> dict[str, Any]:
    """Records of one school (or participant) with proofs against a fresh checkpoint, and the checkpoints
    made in the period with consistency proofs between consecutive ones. Scoped like `log.records`. More than
    `max_records` records raise ExportTooLarge."""
    latest = await log.checkpoint()  # every exported record is covered by it
    checkpoints = [c for c in await log.checkpoints(since=since) if c.tree_size <= latest.tree_size]
    if not checkpoints or checkpoints[-1].jws != latest.jws:
        checkpoints.append(latest)
    consistency = [
        {
            "size1": a.tree_size,
            "size2": b.tree_size,
            "proof": [p.hex() for p in await log.consistency_proof(a.tree_size, b.tree_size)],
        }
        for a, b in itertools.pairwise(checkpoints)
    ]
    records: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await log.records(
            school=school, party_oin=party_oin, since=since, until=until, limit=_PAGE, offset=offset, oldest_first=True
        )
        for stored in page:
            if stored.index >= latest.tree_size:  # appended after the checkpoint: next export
                continue
            if max_records is not None and len(records) >= max_records:
                raise ExportTooLarge(f"more than {max_records} records, more than one export carries")
            proof = await log.inclusion_proof(stored.index, latest.tree_size)
            records.append(
                {
                    "index": stored.index,
                    "leaf_hash": stored.leaf_hash.hex(),
                    "record": stored.record.json_form(),
                    "inclusion_proof": [p.hex() for p in proof],
                }
            )
        if len(page) < _PAGE:
            break
        offset += _PAGE
    return {
        "format": EXPORT_FORMAT,
        "node": log.node_oin,
        "scope": {"school": school, "party_oin": party_oin, "since": _time(since), "until": _time(until)},
        "exported_at": _time(datetime.now(UTC)),
        "checkpoints": [c.jws for c in checkpoints],
        "consistency": consistency,
        "records": records,
    }


def _hashes(value: Any) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("not a list of hex strings")
    return [bytes.fromhex(v) for v in value]


def verify_export(export: Mapping[str, Any], public_key: PublicKey) -> list[str]:
    """Every problem found in the export, precisely named; [] when every signature and proof holds."""
    problems: list[str] = []
    if export.get("format") != EXPORT_FORMAT:
        return [f"format: expected {EXPORT_FORMAT!r}, got {export.get('format')!r}"]
    node = export.get("node")
    raw_scope = export.get("scope")
    scope: dict[str, Any] = raw_scope if isinstance(raw_scope, dict) else {}

    # checkpoints: signed by the node's key, about this node, never shrinking
    checkpoints: list[SignedCheckpoint | None] = []
    for n, token in enumerate(export.get("checkpoints") or []):
        try:
            checkpoint = verify_checkpoint(str(token), public_key)
        except CheckpointRejected as exc:
            problems.append(f"checkpoint {n}: {exc}")
            checkpoints.append(None)
            continue
        if checkpoint.node != node:
            problems.append(f"checkpoint {n}: signed for node {checkpoint.node}, the export is of node {node}")
        checkpoints.append(checkpoint)
    if not checkpoints:
        return [*problems, "checkpoints: the export has no checkpoint to check records against"]

    # consecutive checkpoints: the later tree extends the earlier one
    proofs: dict[tuple[int, int], Any] = {}
    for entry in export.get("consistency") or []:
        if isinstance(entry, dict):
            proofs[(entry.get("size1"), entry.get("size2"))] = entry.get("proof")  # type: ignore[index]
    for n in range(1, len(checkpoints)):
        a, b = checkpoints[n - 1], checkpoints[n]
        if a is None or b is None:
            continue
        label = f"checkpoints {n - 1} -> {n} (tree sizes {a.tree_size} -> {b.tree_size})"
        if (a.tree_size, b.tree_size) not in proofs:
            problems.append(f"{label}: no consistency proof in the export")
            continue
        try:
            proof = _hashes(proofs[(a.tree_size, b.tree_size)])
            verify_consistency(a.tree_size, b.tree_size, proof, a.root_hash, b.root_hash)
        except ProofError as exc:
            problems.append(f"{label}: consistency proof fails: {exc}")
        except ValueError as exc:
            problems.append(f"{label}: consistency proof malformed: {exc}")

    # records: content matches the leaf, the leaf is in the latest checkpoint's tree
    latest = checkpoints[-1]
    if latest is None:
        return [*problems, "records: the latest checkpoint does not verify, so no record can be checked"]
    for n, item in enumerate(export.get("records") or []):
        if not isinstance(item, dict) or not isinstance(item.get("record"), dict):
            problems.append(f"record {n}: malformed entry")
            continue
        index = item.get("index")
        record = item["record"]
        label = f"record {n} (leaf {index}, exchange {record.get('exchange_id')})"
        if not isinstance(index, int) or isinstance(index, bool):
            problems.append(f"{label}: index is not an integer")
            continue
        try:
            computed = record_leaf_hash(record)
        except (TypeError, ValueError) as exc:
            problems.append(f"{label}: record cannot be encoded: {exc}")
            continue
        if item.get("leaf_hash") != computed.hex():
            problems.append(f"{label}: content does not match its leaf hash (altered record or leaf hash)")
        if scope.get("school") and record.get("school") != scope["school"]:
            problems.append(f"{label}: belongs to school {record.get('school')!r}, not {scope['school']!r}")
        try:
            proof = _hashes(item.get("inclusion_proof"))
            verify_inclusion(computed, index, latest.tree_size, proof, latest.root_hash)
        except ProofError as exc:
            problems.append(
                f"{label}: not proven in the tree of the latest checkpoint (size {latest.tree_size}): {exc}"
            )
        except ValueError as exc:
            problems.append(f"{label}: inclusion proof malformed: {exc}")
    return problems
