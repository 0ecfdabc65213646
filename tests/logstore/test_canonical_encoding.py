"""The node's fast record encoding gives exactly the bytes `canonical_json` defines, for every record it can make.

Verifiers recompute leaves with `canonical_json(record JSON)`; the node encodes with msgspec. Any record
on which the two disagreed would be a leaf nobody could verify, so the equality is checked over generated
records: every kind of text (control characters, U+2028, astral characters, lone surrogates), integers of
any size, latency floats as the pipeline rounds them and as anything else, and datetimes in any zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connectors.logstore.leaf import canonical_json, encode_record
from connectors.logstore.record import ExchangeRecord


def defined_encoding(record: ExchangeRecord) -> bytes:
    return canonical_json(record.json_form())


def outcome(encode: Any, record: ExchangeRecord) -> tuple[str, object]:
    """The bytes, or the kind of error: a record one encoding refuses, the other must refuse too."""
    try:
        return "bytes", encode(record)
    except (ValueError, UnicodeEncodeError) as exc:
        return "refused", type(exc)


text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12) | st.sampled_from(
    ["\u2028\u2029", "\x00\x1f\x7f\x80", '"\\/', "é🎓\U0010ffff", "\ud800", "\udfff"]
)
optional_text = st.none() | text
optional_int = st.none() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59))
zones = st.none() | st.just(UTC) | st.builds(timezone, offsets)
latencies = st.none() | st.floats() | st.floats(0, 1e7).map(lambda x: round(x, 3)) | st.integers(-(2**53), 2**53)

records = st.builds(
    ExchangeRecord,
    exchange_id=text,
    kind=st.sampled_from(["decision", "outcome"]),
    at=st.datetimes(timezones=zones),
    node=text,
    direction=st.sampled_from(["inbound", "outbound"]),
    caller_oin=optional_text,
    client_id=optional_text,
    counterparty_oin=optional_text,
    data_service=optional_text,
    method=optional_text,
    route=optional_text,
    purpose=optional_text,
    school=optional_text,
    decision=st.sampled_from(["allowed", "denied"]),
    step=optional_text,
    reason=optional_text,
    http_status=optional_int,
    edu_status=optional_text,
    upstream_status=optional_int,
    bytes_in=optional_int,
    bytes_out=optional_int,
    records=optional_int,
    removed_fields=optional_int,
    latency_ms=latencies,
    student_hashes=st.lists(text, max_size=3).map(tuple) | st.lists(text, max_size=3),
)


def gateway_outcome(**changes: Any) -> ExchangeRecord:
    fields: dict[str, Any] = {
        "exchange_id": "3f2c1b7e-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        "kind": "outcome",
        "at": datetime(2026, 11, 23, 16, 14, 54, 123456, tzinfo=UTC),
        "node": "00000003273100010000",
        "caller_oin": "00000003123456780000",
        "client_id": "publisher-progress",
        "counterparty_oin": "00000003273100010000",
        "data_service": "leermateriaalgebruik",
        "method": "PUT",
        "route": "/v1/progress/{id}",
        "purpose": "b",
        "school": "104A158",
        "decision": "allowed",
        "upstream_status": 200,
        "bytes_in": 612,
        "bytes_out": 40,
        "records": 1,
        "latency_ms": round(12.3456789, 3),
        "student_hashes": ("ab" * 32,),
    }
    return ExchangeRecord(**(fields | changes))


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(records)
@example(gateway_outcome())
@example(gateway_outcome(latency_ms=1e16, at=datetime(2026, 1, 1, tzinfo=UTC)))
@example(gateway_outcome(latency_ms=0.00001, bytes_out=2**64))
@example(gateway_outcome(latency_ms=float("nan")))
@example(gateway_outcome(reason="line\u2028break\nand\ttab \x01 \U0001f600"))
@example(gateway_outcome(at=datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=-5, seconds=-7)))))
def test_the_fast_encoding_is_byte_for_byte_the_canonical_json_of_the_record(record: ExchangeRecord) -> None:
    assert outcome(encode_record, record) == outcome(defined_encoding, record)


def _offset_in_whole_minutes(record: ExchangeRecord) -> bool:
    offset = record.at.utcoffset()
    return offset is None or not offset % timedelta(minutes=1)


# A time at an offset with seconds (no zone in use has one; the node stamps records in UTC) cannot survive a round
# trip by any encoding: RFC 3339 has no seconds in an offset, so it is written with them dropped, and reads back as
# another offset.
@settings(max_examples=300)
@given(records.filter(_offset_in_whole_minutes))
def test_a_stored_record_read_back_encodes_to_the_bytes_that_were_stored(record: ExchangeRecord) -> None:
    kind, body = outcome(encode_record, record)
    if kind == "bytes":
        assert isinstance(body, bytes)
        assert encode_record(ExchangeRecord.parse_json(body)) == body


def test_a_subclass_of_the_record_is_encoded_by_the_definition_itself() -> None:
    class Annotated(ExchangeRecord, frozen=True):
        pass

    record = Annotated(**msgspec.structs.asdict(gateway_outcome()))
    assert encode_record(record) == defined_encoding(record)
