"""kill -9 during a stream of appends loses no acknowledged record and leaves a consistent tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.logstore import open_log
from gateway.config import LogSection
from tests.logstore.processes import ended
from tests.logstore.samples import NODE, SCHOOL
from trust import transparency
from trust.transparency import verify_consistency

APPENDER = Path(__file__).with_name("appender.py")


def run_and_kill(store: str, where: str, state_dir: Path, acks_before_kill: int) -> list[str]:
    """Start the appender, SIGKILL it once it has acknowledged enough records, return every line it printed."""
    child = subprocess.Popen(
        [sys.executable, "-u", str(APPENDER), store, where, str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    lines: list[str] = []
    try:
        acks = 0
        for line in child.stdout:
            lines.append(line)
            acks += line.startswith("ack ")
            if acks >= acks_before_kill:
                os.kill(child.pid, signal.SIGKILL)
                break
        else:
            pytest.fail(f"the appender stopped by itself after {acks} acknowledgements")
        lines.extend(child.stdout.read().splitlines(keepends=True))  # what it printed before it died
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    return [line for line in lines if line.endswith("\n")]  # a torn last line was never fully acknowledged


@pytest.mark.slow
async def test_kill_9_loses_no_acknowledged_record(log_section: LogSection, tmp_path: Path) -> None:
    where = str(log_section.path) if log_section.store == "sqlite" else str(log_section.dsn)
    lines = run_and_kill(log_section.store, where, tmp_path, acks_before_kill=600)
    acked = {int(parts[1]): parts[2] for parts in (line.split() for line in lines) if parts[0] == "ack"}
    (checkpoint_line,) = [line.split() for line in lines if line.startswith("checkpoint ")]
    assert len(acked) >= 600
    for _, pid in (line.split() for line in lines if line.startswith("writer ")):
        assert await ended(int(pid)), "the SQLite writer outlived its node"

    log = open_log(log_section, state_dir=tmp_path, node_oin=NODE, checkpoint_interval=None)
    await log.start()
    try:
        stored = {s.index: s for s in await log.records(school=SCHOOL, limit=1_000_000, oldest_first=True)}
        for index, exchange_id in acked.items():
            assert index in stored, f"acknowledged record {index} is lost"
            assert stored[index].record.exchange_id == exchange_id
        # the tree is whole: one leaf per record, in order, hashing to the root the store computes
        leaves = await log.leaf_hashes()
        assert len(leaves) == log.size() == len(stored)
        assert sorted(stored) == list(range(len(leaves)))
        assert [stored[i].leaf_hash for i in range(len(leaves))] == leaves
        assert await log.root_hash(log.size()) == transparency.root_hash(leaves)
        # and it grew from the checkpoint signed before the kill
        size1, root1 = int(checkpoint_line[1]), bytes.fromhex(checkpoint_line[2])
        proof = await log.consistency_proof(size1, log.size())
        verify_consistency(size1, log.size(), proof, root1, await log.root_hash(log.size()))
        # and takes new records after the crash
        assert await log.append(stored[0].record) == len(leaves)
    finally:
        await log.close()
