"""The SQLite log writer with a part of its work left out, for `bench/log_cost.py` only: never a node's writer.

    EDUGATE_BENCH_WRITER=journal|answer python bench/diagnostic_writer.py PATH LOCK_WAIT

`journal`: every batch is journalled (appended and fdatasync'd) and answered, and never put into the database.
`answer`: every batch is answered at once, neither journalled nor put into the database; what is left is the round
trip to the process. Both give up what the log promises (a batch in the database, or durable at all), so they only
say what each part of the real writer costs the exchange path. Loaded by its file, as the node starts the real
writer, so the process carries no more than the real one does.
"""

from __future__ import annotations

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

MODES = ("journal", "answer")


def _no_rows(*_: Any) -> None:
    return None


def _no_entry(self: Any, frame: bytes) -> None:
    return None


def main() -> None:
    mode = os.environ.get("EDUGATE_BENCH_WRITER", "")
    if mode not in MODES:
        sys.exit(f"EDUGATE_BENCH_WRITER must be one of {', '.join(MODES)}, not {mode!r}")
    setattr(writer, "_batch_rows", _no_rows)  # noqa: B010 - a module loaded by its file: untyped
    if mode == "answer":
        writer.Journal.append = _no_entry
    writer.main()


if __name__ == "__main__":
    main()
