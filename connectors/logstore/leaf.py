"""The canonical encoding of a log record, and its leaf hash in the node's Merkle tree.

A record's leaf is the RFC 9162 leaf hash, SHA-256(0x00 || entry), of its *canonical encoding*: the
record's JSON form (`record.model_dump(mode="json")`: datetimes as RFC 3339 strings, tuples as arrays)
serialised with keys sorted, no whitespace (`","` and `":"` separators), non-ASCII characters kept as
UTF-8 (not `\\u` escapes), and encoded as UTF-8. The store keeps exactly these bytes as the record body,
so a verifier recomputes the leaf from the exported JSON object with `canonical_json` alone, without
knowing the record model.

`canonical_json` is the definition. The node encodes every record it appends, on the event loop, so
`encode_record` takes a faster road to the same bytes: msgspec straight from the validated record's
fields, 2.6 us against 15 us for model_dump + json.dumps (timeit, one outcome record). The two agree on
strings, integers, None, arrays, key order and datetimes in UTC, naive or at an offset of whole minutes
(both write RFC 3339; an offset with seconds, as only historic zones have, each rounds its own way, so
such a record takes the defined road). Floats they write differently (msgspec `1e16`, `0.00001`; Python
`1e+16`, `1e-05`), so floats go in as Python's own repr, which is what json.dumps writes.
tests/logstore/test_canonical_encoding.py checks the equality over generated records.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from connectors.logstore.record import ExchangeRecord
from trust.transparency import leaf_hash


def canonical_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _float_fields() -> tuple[str, ...]:
    """The record's fields that may hold a float (their JSON text must be Python's repr)."""
    found = []
    for name, info in ExchangeRecord.model_fields.items():
        annotation = info.annotation
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        if annotation is float or (union and float in typing.get_args(annotation)):
            found.append(name)
    return tuple(found)


_FLOAT_FIELDS = _float_fields()
_ENCODER = msgspec.json.Encoder(order="sorted")


def _json_float(value: float) -> msgspec.Raw:
    if not math.isfinite(value):  # json.dumps(allow_nan=False) refuses these too: a record never holds one
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    return msgspec.Raw(float.__repr__(value).encode())


_MINUTE = timedelta(minutes=1)


def _same_time_text(at: datetime) -> bool:
    """Whether msgspec writes this datetime as pydantic does: no zone, or an offset of whole minutes."""
    if at.tzinfo is UTC:
        return True
    offset = at.utcoffset()
    return offset is None or not offset % _MINUTE


def encode_record(record: ExchangeRecord) -> bytes:
    """canonical_json(record.model_dump(mode="json")), computed without the round trip through pydantic."""
    # a subclass may serialise differently, and an offset with seconds is written differently: the defined road
    if type(record) is not ExchangeRecord or not _same_time_text(record.at):
        return canonical_json(record.model_dump(mode="json"))
    fields: dict[str, Any] = dict(record.__dict__)  # the validated field values, by field name
    for name in _FLOAT_FIELDS:
        value = fields[name]
        if type(value) is float:
            fields[name] = _json_float(value)
    return _ENCODER.encode(fields)


def record_leaf_hash(entry: bytes | Mapping[str, Any]) -> bytes:
    """The leaf hash of a canonical encoding, or of a record's JSON object (as found in an export)."""
    return leaf_hash(entry if isinstance(entry, bytes) else canonical_json(entry))
