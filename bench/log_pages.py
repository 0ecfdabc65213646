"""Where the SQLite log writer's bytes go: WAL bytes, write calls and CPU per record, for the log's schema as it is
and with one part left out, all in one run on this machine.

Batches are made as the gateway's benchmark makes them (13 records: decisions and outcomes of Progress PUTs, one
student row per decision, among `--students` students) and committed by the writer's own `connect` and `_batch`,
in this process, after a warm-up that grows the log to 26,000 records. Bytes and write calls are the process's
own (`/proc/self/io`), so they count the WAL frames (each a header and a page, two calls) and the checkpoints'
copies into the database file; not the writer's journal of answered batches (`<log>-pending`, about the
request frame's size per batch), which no schema part changes. A figure to compare parts of the schema by, not a
throughput.

    .venv/bin/python bench/log_pages.py [--batches 1000] [--students 32]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from exchange import written

from connectors.logstore import sqlite_writer
from connectors.logstore.base import TreeEdge
from gateway.exchange import new_exchange_id

BATCH = 13  # records per commit in the gateway benchmark's group commit (its mean batch)
SECONDARY = ("records_school_at", "records_caller_at", "records_counterparty_at", "records_at", "records_exchange")


@dataclass(frozen=True)
class Variant:
    name: str
    prepare: Callable[[sqlite3.Connection], None] = lambda db: None
    students: bool = True
    tree: bool = True


def without_secondary_indexes(db: sqlite3.Connection) -> None:
    for name in SECONDARY:
        db.execute(f"DROP INDEX {name}")


def rare_checkpoints(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA wal_autocheckpoint=4000")


VARIANTS = (
    Variant("the log's schema"),
    Variant("without the student index rows", students=False),
    Variant("without the tree's nodes", tree=False),
    Variant("without the five secondary indexes", without_secondary_indexes),
    Variant("checkpoint every 4,000 pages, not 1,000", rare_checkpoints),
)


def measure(variant: Variant, batches: int, students: list[str], work: Path) -> tuple[float, float, float]:
    db = sqlite_writer.connect(str(work / f"{len(list(work.iterdir()))}.sqlite"))
    variant.prepare(db)
    edge, index = TreeEdge(), 0
    body = b"x" * 655  # a Progress PUT's canonical record is about this long
    chooser = random.Random(7)

    def commit() -> None:
        nonlocal edge, index
        records, student_rows, leaves = [], [], []
        for _ in range(BATCH):
            kind = "decision" if index % 2 == 0 else "outcome"
            leaf = hashlib.sha256(index.to_bytes(8, "big")).digest()
            leaves.append(leaf)
            at = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
            records.append([
                index, leaf, new_exchange_id(), kind, at, "104A158", "00000003222222220000", "00000003111111110000",
                "00000003222222220000", "leermateriaalgebruik", "b", "allowed", 1, None, body,
            ])  # fmt: skip
            if kind == "decision" and variant.students:  # an outcome indexes no student its decision did
                student_rows.append([chooser.choice(students), index])
            index += 1
        edge, nodes = edge.extended(leaves)
        sqlite_writer._batch(db, records, student_rows, [list(n) for n in nodes] if variant.tree else [])

    for _ in range(2000):
        commit()
    (bytes_before, calls_before), cpu = written("self"), time.process_time()
    for _ in range(batches):
        commit()
    cpu = time.process_time() - cpu
    bytes_after, calls_after = written("self")
    db.close()
    n = batches * BATCH
    return (bytes_after - bytes_before) / n, (calls_after - calls_before) / n, cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--students", type=int, default=32)
    args = parser.parse_args()
    students = [hashlib.sha256(f"student {n}".encode()).hexdigest() for n in range(args.students)]
    with tempfile.TemporaryDirectory(prefix="edugate-log-pages-") as directory:
        results = {v.name: measure(v, args.batches, students, Path(directory)) for v in VARIANTS}
    base = results[VARIANTS[0].name]
    print(f"\n{args.batches} commits of {BATCH} records (half decisions with a student each, of {args.students})\n")
    print(f"{'schema':<42}{'bytes/record':>14}{'writes/record':>15}{'CPU us/record':>15}{'bytes vs schema':>17}")
    for name, (size, calls, cpu) in results.items():
        print(f"{name:<42}{size:>14,.0f}{calls:>15.2f}{cpu:>15.1f}{size / base[0]:>17.2f}")


if __name__ == "__main__":
    main()
