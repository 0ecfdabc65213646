"""A stand-in for a node under load: appends records without end and prints each acknowledgement.

    python tests/logstore/appender.py (sqlite PATH | postgresql DSN) STATE_DIR

Prints `ack <index> <exchange_id>` only after `append` returned (the record is durable), and once
`checkpoint <size> <root hex>` after the first 50 acknowledgements; on SQLite first `writer <pid>`, its
writer process. Run by the kill -9 tests.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, as pytest has it

from connectors.logstore import open_log
from connectors.logstore.sqlite import SQLiteExchangeLog
from gateway.config import LogSection
from tests.logstore.samples import NODE, record


async def main(store: str, where: str, state_dir: Path) -> None:
    section = (
        LogSection(store="sqlite", path=Path(where)) if store == "sqlite" else LogSection(store="postgresql", dsn=where)
    )
    log = open_log(section, state_dir=state_dir, node_oin=NODE, checkpoint_interval=None)
    await log.start()
    if isinstance(log, SQLiteExchangeLog):
        sys.stdout.write(f"writer {log.writer_pid}\n")
    acked = 0
    checkpointed = False

    async def appender() -> None:
        nonlocal acked, checkpointed
        while True:
            r = record(students=("ab" * 32,))
            index = await log.append(r)
            sys.stdout.write(f"ack {index} {r.exchange_id}\n")
            sys.stdout.flush()
            acked += 1
            if acked >= 50 and not checkpointed:
                checkpointed = True
                c = await log.checkpoint()
                sys.stdout.write(f"checkpoint {c.tree_size} {c.root_hash.hex()}\n")
                sys.stdout.flush()

    await asyncio.gather(*(appender() for _ in range(16)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
