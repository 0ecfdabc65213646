"""Exchange-log throughput: group commit against one commit per record, on SQLite and PostgreSQL.

Both modes run through the same store class (`group_commit=True|False`), with N concurrent appenders for
a fixed time each, in one run on this machine; the CPU time the event loop's thread spends per appended
record (records made beforehand: what `append` and the writer cost the loop, not the record's construction);
then the time to generate inclusion and consistency proofs in a log of 1,000,000 leaves.

    .venv/bin/python bench/log_throughput.py [--appenders 64] [--seconds 5] [--leaves 1000000]
                                             [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.logstore import open_log
from connectors.logstore.base import GroupCommitLog, _Pending
from connectors.logstore.leaf import encode_record, record_leaf_hash
from connectors.logstore.record import ExchangeRecord
from gateway.config import LogSection
from gateway.exchange import new_exchange_id
from trust.transparency import verify_consistency, verify_inclusion

NODE = "00000003273100010000"


def sample_record() -> ExchangeRecord:
    return ExchangeRecord(
        exchange_id=new_exchange_id(),  # time-ordered, as the gateway makes them
        kind="decision",
        at=datetime.now(UTC),
        node=NODE,
        caller_oin="00000003123456780000",
        client_id="publisher-progress",
        counterparty_oin=NODE,
        data_service="leermateriaalgebruik",
        method="PUT",
        route="/v1/progress/{id}",
        purpose="b",
        school="104A158",
        decision="allowed",
        http_status=200,
        student_hashes=(secrets.token_hex(32),),
    )


@asynccontextmanager
async def postgres_database(admin_dsn: str) -> AsyncIterator[str]:
    name = f"edugate_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def store(kind: str, admin_dsn: str, **options: object) -> AsyncIterator[GroupCommitLog]:
    with tempfile.TemporaryDirectory(prefix="edugate-bench-") as tmp:
        if kind == "sqlite":
            section = LogSection(store="sqlite", path=Path(tmp) / "bench.sqlite")
            log = open_log(section, state_dir=Path(tmp), node_oin=NODE, checkpoint_interval=None, **options)
            await log.start()
            try:
                yield log
            finally:
                await log.close()
            return
        async with postgres_database(admin_dsn) as dsn:
            log = open_log(
                LogSection(store="postgresql", dsn=dsn), state_dir=Path(tmp), node_oin=NODE,
                checkpoint_interval=None, **options,
            )  # fmt: skip
            await log.start()
            try:
                yield log
            finally:
                await log.close()


async def throughput(log: GroupCommitLog, appenders: int, seconds: float) -> float:
    """Records/s acknowledged by `appenders` concurrent tasks appending without pause for `seconds`."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def appender() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await log.append(sample_record())
            done += 1

    for _ in range(20):  # warm up: schema, connections, page cache
        await log.append(sample_record())
    start = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(appenders)))
    return done / (time.perf_counter() - start)


async def loop_cpu_per_append(log: GroupCommitLog, appenders: int, records: int) -> float:
    """Microseconds of the event loop thread's CPU per record, `appenders` tasks appending `records` in all.

    The writer's thread (SQLite) is not counted: its time is what the loop does not spend."""
    prepared = [sample_record() for _ in range(records)]
    for record in prepared[:20]:  # warm up
        await log.append(record)
    todo = iter(prepared[20:])

    async def appender() -> None:
        for record in todo:  # the tasks share one iterator: each record is appended once
            await log.append(record)

    cpu = time.thread_time()
    await asyncio.gather(*(appender() for _ in range(appenders)))
    return (time.thread_time() - cpu) / (records - 20) * 1e6


async def fill(log: GroupCommitLog, leaves: int, progress: Callable[[int], None]) -> None:
    """Grow the log to `leaves` records in transactions of 10,000: the writer's own commit (`_commit`),
    without a waiting task per record, so a million records take minutes rather than a quarter hour."""
    chunk = 10_000
    while log.size() < leaves:
        batch = []
        for _ in range(min(chunk, leaves - log.size())):
            body = encode_record(r := sample_record())
            batch.append(_Pending(body, record_leaf_hash(body), r, asyncio.get_running_loop().create_future()))
        await log._commit(batch)
        if not log.writable():
            raise RuntimeError("fill failed")
        progress(log.size())


async def proof_times(log: GroupCommitLog, samples: int) -> tuple[list[float], list[float]]:
    size = log.size()
    root = await log.root_hash(size)
    leaves_at = random.sample(range(size), samples)
    inclusion: list[float] = []
    for index in leaves_at:
        t = time.perf_counter()
        proof = await log.inclusion_proof(index, size)
        inclusion.append((time.perf_counter() - t) * 1000)
        (leaf,) = await log.leaf_hashes(index, index + 1)
        verify_inclusion(leaf, index, size, proof, root)  # an honest figure: the proofs are right
    consistency: list[float] = []
    for size1 in random.sample(range(1, size), samples):
        t = time.perf_counter()
        proof = await log.consistency_proof(size1, size)
        consistency.append((time.perf_counter() - t) * 1000)
        verify_consistency(size1, size, proof, await log.root_hash(size1), root)
    return inclusion, consistency


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)]


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # keep the table clean
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appenders", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--cpu-records", type=int, default=20_000)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    stores = args.stores.split(",")

    print(f"Exchange-log throughput, {args.appenders} concurrent appenders, {args.seconds:g} s per run")
    print(f"{'store':<12}{'group commit rec/s':>20}{'commit per record rec/s':>26}{'ratio':>9}")
    for kind in stores:
        async with store(kind, args.dsn, group_commit=True) as log:
            grouped = await throughput(log, args.appenders, args.seconds)
        async with store(kind, args.dsn, group_commit=False) as log:
            single = await throughput(log, args.appenders, args.seconds)
        print(f"{kind:<12}{grouped:>20,.0f}{single:>26,.0f}{grouped / single:>8.1f}x", flush=True)

    print()
    print(f"Event-loop CPU per append, {args.appenders} appenders, {args.cpu_records:,} records made beforehand")
    for kind in stores:
        async with store(kind, args.dsn, group_commit=True) as log:
            micros = await loop_cpu_per_append(log, args.appenders, args.cpu_records)
        print(f"{kind:<12}{micros:>10.1f} us", flush=True)

    print()
    print(f"Proof generation in a log of {args.leaves:,} leaves ({args.samples} random proofs each, verified)")
    print(f"{'store':<12}{'fill s':>9}{'inclusion mean ms':>19}{'p99 ms':>9}{'consistency mean ms':>21}{'p99 ms':>9}")
    for kind in stores:
        async with store(kind, args.dsn, group_commit=True) as log:
            t = time.perf_counter()
            await fill(log, args.leaves, lambda n, k=kind: print(f"  {k}: {n:,} leaves", end="\r", file=sys.stderr))
            filled = time.perf_counter() - t
            inclusion, consistency = await proof_times(log, args.samples)
        print(
            f"{kind:<12}{filled:>9.0f}{statistics.mean(inclusion):>19.3f}{p99(inclusion):>9.3f}"
            f"{statistics.mean(consistency):>21.3f}{p99(consistency):>9.3f}",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
