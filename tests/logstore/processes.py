"""Waiting for a process to end, for the tests of the SQLite log's writer process."""

from __future__ import annotations

import asyncio
from pathlib import Path


def running(pid: int) -> bool:
    """True while `pid` runs; a zombie (ended, not yet reaped by whoever inherited it) has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or reaped between the open and the read
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def ended(pid: int, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if not running(pid):
            return True
        await asyncio.sleep(0.05)
    return False
