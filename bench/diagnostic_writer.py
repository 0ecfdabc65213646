"""The SQLite log writer with a part of its work left out, for `bench/log_cost.py` only: never a node's writer.

    EDUGATE_BENCH_WRITER=journal|answer|apart|idle python bench/diagnostic_writer.py PATH LOCK_WAIT

`journal`: every batch is journalled (appended and fdatasync'd) and answered, and never put into the database.
`answer`: every batch is answered at once, neither journalled nor put into the database; what is left is the round
trip to the process. `apart`: every batch is journalled and answered, and a child process of the writer puts it
into the database (its own connection, fed through a pipe of 1 MiB, which bounds how far it may lag); `idle`: the
same, the child under SCHED_IDLE, so that the database's work runs only on a core nothing else wants. Each gives up
something the log promises (a batch in the database, durable at all, or settled before a read and never lost to a
child that dies), so they only say what each part of the real writer costs the exchange path. Loaded by its file,
as the node starts the real writer, so the process carries no more than the real one does.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location(
    "sqlite_writer", Path(__file__).resolve().parents[1] / "connectors" / "logstore" / "sqlite_writer.py"
)
assert _spec is not None and _spec.loader is not None
writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writer)

MODES = ("journal", "answer", "apart", "idle")
_F_SETPIPE_SZ = 1031


def _no_rows(*_: Any) -> None:
    return None


def _no_entry(self: Any, frame: bytes) -> None:
    return None


def _indexer(path: str, frames: int, idle: bool) -> None:
    """Put every batch read from `frames` into the database, in a process of its own; at SCHED_IDLE if `idle`."""
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    decode = writer.msgspec.msgpack.Decoder().decode
    stream = os.fdopen(frames, "rb", buffering=1 << 20)
    db = None
    while (frame := writer._read_frame(stream)) is not None:
        db = db or writer.connect(path)
        _, records, students, nodes = decode(frame)
        writer._batch(db, records, students, nodes)
    os._exit(0)


def _index_apart(idle: bool) -> None:
    """The writer journals and answers; a child process puts each batch into the database after the answer."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, _F_SETPIPE_SZ, 1 << 20)  # the bound on how far the database may lag: the pipe
    if os.fork() == 0:
        os.close(write_end)
        _indexer(sys.argv[1], read_end, idle)
    os.close(read_end)
    pipe = os.fdopen(write_end, "wb", buffering=0)

    def take(self: Any, frame: bytes, records: Any, students: Any, nodes: Any, answer: Any) -> None:
        self.journal.append(frame)
        answer(True, None)
        pipe.write(writer._LENGTH.pack(len(frame)) + frame)
        self.size += len(records)

    writer.Batches.take = take


def main() -> None:
    mode = os.environ.get("EDUGATE_BENCH_WRITER", "")
    if mode not in MODES:
        sys.exit(f"EDUGATE_BENCH_WRITER must be one of {', '.join(MODES)}, not {mode!r}")
    if mode in ("apart", "idle"):
        _index_apart(idle=mode == "idle")
        writer.main()
        return
    setattr(writer, "_batch_rows", _no_rows)  # noqa: B010 - a module loaded by its file: untyped
    if mode == "answer":
        writer.Journal.append = _no_entry
    writer.main()


if __name__ == "__main__":
    main()
