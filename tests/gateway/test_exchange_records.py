"""An admitted exchange's two log records: the decision, and the outcome copied from it."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from connectors.logstore.leaf import encode_record
from connectors.logstore.record import ExchangeRecord
from connectors.logstore.students import StudentHasher
from gateway.exchange import Exchange

NODE = "00000003111111110000"
ECK = "https://ketenid.nl/201703/" + "ab" * 64
HASHER = StudentHasher(b"s" * 32)


def pulled_exchange() -> Exchange:
    x = Exchange(request=SimpleNamespace(method="GET", content_length=None), now=datetime.now(UTC))
    x.peer = SimpleNamespace(oin="00000003222222220000")
    x.token = SimpleNamespace(client_id="dashboard-app")
    x.school, x.purpose = "104A158", "j"
    return x


def test_the_outcome_record_is_the_decision_record_with_the_outcome_and_what_the_answer_added() -> None:
    x = pulled_exchange()
    decision = x.record(NODE, HASHER, kind="decision", decision="allowed")
    # a pull answer, cut to the allowlist, carried two records about one student
    x.records, x.removed_fields, x.students = 2, 3, [ECK]
    outcome_fields: dict[str, Any] = {"upstream_status": 200, "bytes_out": 512, "bytes_in": None, "latency_ms": 4.25}

    outcome = x.outcome(decision, HASHER, **outcome_fields)

    validated = ExchangeRecord.parse_object(
        {**decision.json_form(), **outcome_fields, "kind": "outcome", "records": 2, "removed_fields": 3,
         "student_hashes": [HASHER.hash("104A158", ECK)]}
    )  # fmt: skip
    assert outcome == validated
    assert encode_record(outcome) == encode_record(validated)  # the same leaf in the tree
    assert decision.kind == "decision" and decision.records is None and decision.student_hashes == ()
