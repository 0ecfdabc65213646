"""The canonical encoding of a log record, and its leaf hash in the node's Merkle tree.

A record's leaf is the RFC 9162 leaf hash, SHA-256(0x00 || entry), of its *canonical encoding*: the
record's JSON form (`record.json_form()`: datetimes as RFC 3339 strings, the student hashes as an array)
serialised with keys sorted, no whitespace (`","` and `":"` separators), non-ASCII characters kept as
UTF-8 (not `\\u` escapes), and encoded as UTF-8. The store keeps exactly these bytes as the record body,
so a verifier recomputes the leaf from the exported JSON object with `canonical_json` alone, without
knowing the record model.

`canonical_json` is the definition. The node encodes every record it appends, on the event loop, so
`encode_record` takes a faster road to the same bytes: msgspec straight from the record's fields, without
building the JSON object. The two agree on strings, integers, None, arrays, key order and datetimes (the
JSON form's times are msgspec's text too). Floats they write differently outside 1e-4 <= |x| < 1e16
(msgspec `1e16`, `0.00001`; Python `1e+16`, `1e-05`), so a record with such a float takes the defined road.
tests/logstore/test_canonical_encoding.py checks the equality over generated records.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from typing import Any

import msgspec

from connectors.logstore.record import ExchangeRecord
from trust.transparency import leaf_hash


def canonical_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _float_fields() -> tuple[str, ...]:
    """The record's fields that may hold a float (their JSON text must be Python's repr)."""
    found = []
    for field in msgspec.structs.fields(ExchangeRecord):
        union = typing.get_origin(field.type) in (typing.Union, types.UnionType)
        if field.type is float or (union and float in typing.get_args(field.type)):
            found.append(field.name)
    return tuple(found)


_FLOAT_FIELDS = _float_fields()
_ENCODER = msgspec.json.Encoder(order="sorted")


def _same_float_text(value: float) -> bool:
    """Whether msgspec writes this float as json.dumps does (NaN and infinities json.dumps refuses: not these)."""
    return value == 0.0 or 1e-4 <= abs(value) < 1e16


def encode_record(record: ExchangeRecord) -> bytes:
    """canonical_json(record.json_form()), computed without building the JSON object."""
    if type(record) is ExchangeRecord:  # a subclass may add fields or serialise differently: the defined road
        for name in _FLOAT_FIELDS:
            value = getattr(record, name)
            if value is not None and not _same_float_text(value):
                break
        else:
            return _ENCODER.encode(record)
    return canonical_json(record.json_form())


def record_leaf_hash(entry: bytes | Mapping[str, Any]) -> bytes:
    """The leaf hash of a canonical encoding, or of a record's JSON object (as found in an export)."""
    return leaf_hash(entry if isinstance(entry, bytes) else canonical_json(entry))
