"""An exchange leaves nothing for the cyclic garbage collector: reference counting frees all it made.

The serving node collects its youngest generation only after 50,000 allocations (`gateway.cli.settle_heap`), on the
assumption that exchanges make no reference cycles. A cycle made per exchange (a nested function that calls itself,
say) makes every collection scan tens of thousands of objects, which on the benchmark's load cost about 2% of the
event loop's time.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from connectors.samples.federation import SCHOOL, Federation
from connectors.samples.publisher import progress_record
from gateway.demo import eck_id

PROJECT = ("gateway", "connectors", "trust")


@contextmanager
def garbage_made_meanwhile() -> Iterator[list[object]]:
    """The objects the cyclic collector finds unreachable among those made inside the block. No automatic
    collection meanwhile, and every object alive before the block is held until it has been collected, so that what
    an earlier test left running (a thread ending, a cache evicting) cannot drop its objects there."""
    found: list[object] = []
    gc.collect()
    gc.disable()
    existing = gc.get_objects()
    gc.set_debug(gc.DEBUG_SAVEALL)  # kept in gc.garbage instead of freed
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        del existing


def where_made(thing: object) -> str:
    """`module.qualname` of a function, or of an object's class (a class object counts as a `type`)."""
    module, qualname = getattr(thing, "__module__", None), getattr(thing, "__qualname__", None)
    if isinstance(thing, type) or module is None or qualname is None:
        return f"{type(thing).__module__}.{type(thing).__qualname__}"
    return f"{module}.{qualname}"


async def test_admitted_pushes_leave_no_reference_cycles_of_the_node_behind(
    federation: Federation,
) -> None:
    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    for n in range(5):  # warm: caches filled, connections open
        body = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(n), school=SCHOOL)
        await publisher.call("PUT", f"/v1/progress/{body['id']}", token=token, json=body, headers={"Edu-Purpose": "b"})
    with garbage_made_meanwhile() as garbage:
        for n in range(20):
            body = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(n), school=SCHOOL)
            answer = await publisher.call(
                "PUT", f"/v1/progress/{body['id']}", token=token, json=body, headers={"Edu-Purpose": "b"}
            )
            assert answer.status in (200, 201), answer.body

    assert cycles_of_ours(garbage) == []


async def test_refused_exchanges_leave_no_reference_cycles_of_the_node_behind(
    federation: Federation,
) -> None:
    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    body = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(1), school=SCHOOL)
    refused = {"Edu-Purpose": "zz"}  # not a purpose of the covenant: 403 at step purpose, after every earlier check
    await publisher.call("PUT", f"/v1/progress/{body['id']}", token=token, json=body, headers=refused)
    with garbage_made_meanwhile() as garbage:
        for _ in range(20):
            answer = await publisher.call("PUT", f"/v1/progress/{body['id']}", token=token, json=body, headers=refused)
            assert answer.status == 403, answer.body

    assert cycles_of_ours(garbage) == []


def cycles_of_ours(garbage: list[object]) -> list[str]:
    """Where the garbage objects of this project (not the client's) were made."""
    return sorted({made for thing in garbage if (made := where_made(thing)).split(".")[0] in PROJECT})
