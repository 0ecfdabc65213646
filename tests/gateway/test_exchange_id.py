"""Exchange ids: RFC 9562 UUIDv7, so that ids made later sort later (the log's exchange-id index grows at its edge)."""

from __future__ import annotations

import os
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


def test_a_forked_process_makes_ids_of_its_own_not_the_ones_its_parent_makes_next() -> None:
    new_exchange_id()  # the parent now holds randomness drawn ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, new_exchange_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    childs = os.read(read, 64).decode()
    parents = new_exchange_id()
    assert childs.rsplit("-", 1)[1] != parents.rsplit("-", 1)[1]  # 48 of the 62 random bits after the variant
