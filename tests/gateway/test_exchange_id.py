"""Exchange ids: RFC 9562 UUIDv7, so that ids made later sort later (the log's exchange-id index grows at its edge)."""

from __future__ import annotations

import time
import uuid

from gateway.exchange import new_exchange_id


def test_an_exchange_id_is_a_version_7_uuid_carrying_the_time_it_was_made_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    made = uuid.UUID(new_exchange_id())
    after = time.time_ns() // 1_000_000
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after


def test_ids_made_a_millisecond_apart_sort_in_the_order_they_were_made_and_never_repeat() -> None:
    made = []
    for _ in range(5):
        made.append(new_exchange_id())
        time.sleep(0.002)
    assert made == sorted(made)
    assert len({new_exchange_id() for _ in range(10_000)}) == 10_000
