"""The canonical encoding of a log record, and its leaf hash in the node's Merkle tree.

A record's leaf is the RFC 9162 leaf hash, SHA-256(0x00 || entry), of its *canonical encoding*: the
record's JSON form (`record.model_dump(mode="json")`: datetimes as RFC 3339 strings, tuples as arrays)
serialised with keys sorted, no whitespace (`","` and `":"` separators), non-ASCII characters kept as
UTF-8 (not `\\u` escapes), and encoded as UTF-8. The store keeps exactly these bytes as the record body,
so a verifier recomputes the leaf from the exported JSON object with `canonical_json` alone, without
knowing the record model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from connectors.logstore.record import ExchangeRecord
from trust.transparency import leaf_hash


def canonical_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encode_record(record: ExchangeRecord) -> bytes:
    return canonical_json(record.model_dump(mode="json"))


def record_leaf_hash(entry: bytes | Mapping[str, Any]) -> bytes:
    """The leaf hash of a canonical encoding, or of a record's JSON object (as found in an export)."""
    return leaf_hash(entry if isinstance(entry, bytes) else canonical_json(entry))
