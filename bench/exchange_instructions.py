"""Instructions per exchange of the gateway's full path, counted by valgrind's callgrind: a figure that does not move
with what else the machine is doing, for telling whether a change to the hot path made it cheaper; beside it, the
bytes the log writer wrote per exchange and its write calls, which do not move with the machine either.

`bench/exchange.py` measures throughput, but on a shared two-core machine its rounds swing by 20% and more, which
hides any single change worth a few percent. Instructions are not seconds (a cache miss or a syscall costs more than
its count says), so this is a companion to that benchmark, not a replacement: it says which of two versions of the
code does less work for the same exchanges.

The node runs under callgrind (with its log-writer process), instrumented only while a fixed number of exchanges
is sent over a fixed number of keep-alive connections, after a warm-up. With `--against DIR` a second checkout
(`git worktree add /tmp/before HEAD~1`) is counted in the same run and the ratio printed.

    .venv/bin/python bench/exchange_instructions.py [--exchanges 640] [--connections 32] [--against DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from exchange import child_pids, free_port, get_token, progress_puts, publisher_tls, stop, wait_port, written
from loadgen import OpenConnections

HERE = Path(__file__).resolve().parents[1]


@dataclass
class Count:
    tree: Path
    exchanges: int
    node: int  # instructions of the node's process (all its threads) while the exchanges ran
    writer: int  # of its log-writer process
    statuses: dict[int, int]
    written: int = 0  # bytes the log writer wrote meanwhile (its WAL frames and checkpoints; /proc/PID/io wchar)
    writes: int = 0  # and its write calls (syscw)

    @property
    def per_exchange(self) -> float:
        return (self.node + self.writer) / self.exchanges


def _control(*arguments: str) -> None:
    done = subprocess.run(["callgrind_control", *arguments], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"callgrind_control {' '.join(arguments)} failed: {done.stdout}{done.stderr}")


def _summary(dump: Path) -> int:
    """The total instruction count a callgrind dump file states (its `totals:` line; `summary:` reads 0 after a
    --zero)."""
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"{dump} states no total")


def _dumped(work: Path, pid: int) -> int:
    found = sorted(work.glob(f"callgrind.{pid}.*"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"callgrind wrote no dump for process {pid}")
    return _summary(found[-1])


def count(tree: Path, exchanges: int, connection_count: int, warmup: int) -> Count:
    work = Path(tempfile.mkdtemp(prefix="edugate-instructions-"))
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upstream_port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "connectors.samples.dashboard", str(upstream_port)],
                                      cwd=tree, env=env))
        wait_port(upstream_port)
        with (work / "valgrind.log").open("wb") as output:
            node = subprocess.Popen(
                [
                    "valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
                    f"--callgrind-out-file={work}/callgrind.%p",
                    sys.executable, "-m", "connectors.samples.node_process", str(work / "fed"),
                    f"http://127.0.0.1:{upstream_port}",
                ],
                cwd=tree, env=env, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(node)
        deadline = time.time() + 600
        while not (work / "fed" / "ready.json").exists():
            if time.time() > deadline or node.poll() is not None:
                raise RuntimeError(f"the node did not start under valgrind: see {work / 'valgrind.log'}")
            time.sleep(0.5)
        ready = json.loads((work / "fed" / "ready.json").read_text())
        writers = child_pids(node.pid)
        if len(writers) != 1:
            raise RuntimeError(f"expected one log-writer process under the node, found {writers}")

        requests = progress_puts(asyncio.run(get_token(ready["port"], ready)), connection_count)
        context = publisher_tls(ready)

        io: list[tuple[int, int]] = []

        async def exchange() -> dict[int, int]:
            # The same connections for the warm-up and the count: no handshake is counted.
            connections = await OpenConnections.open("127.0.0.1", ready["port"], context, connection_count)
            try:
                await connections.send(requests, max(1, warmup // connection_count))
                for pid in (node.pid, *writers):
                    _control("--zero", str(pid))
                    _control("--instr=on", str(pid))
                io.append(written(writers[0]))
                result = await connections.send(requests, exchanges // connection_count)
                io.append(written(writers[0]))
                for pid in (node.pid, *writers):
                    _control("--instr=off", str(pid))
                    _control("--dump", str(pid))
                return result.statuses
            finally:
                connections.close()

        statuses = asyncio.run(exchange())
        counted = exchanges // connection_count * connection_count
        (bytes_before, calls_before), (bytes_after, calls_after) = io
        return Count(tree, counted, _dumped(work, node.pid), _dumped(work, writers[0]), statuses,
                     bytes_after - bytes_before, calls_after - calls_before)
    finally:
        stop(procs, timeout=60)  # valgrind takes its time to end
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchanges", type=int, default=640, help="exchanges counted (after the warm-up)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=320)
    parser.add_argument("--against", type=Path, help="another checkout of the project, counted as the baseline")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed: apt-get install valgrind")

    trees = [args.against.resolve(), HERE] if args.against else [HERE]
    counts = [count(tree, args.exchanges, args.connections, args.warmup) for tree in trees]
    print(f"\nPUT /v1/progress/{{id}}, {counts[0].exchanges} exchanges over {args.connections} keep-alive connections,"
          f" after {args.warmup} unmeasured; instructions (callgrind Ir) per exchange\n")
    print(f"{'checkout':<40}{'node':>12}{'log writer':>12}{'total':>12}{'writer KB':>11}{'writes':>8}  statuses")
    for c in counts:
        print(f"{c.tree!s:<40}{c.node / c.exchanges:>12,.0f}{c.writer / c.exchanges:>12,.0f}"
              f"{c.per_exchange:>12,.0f}{c.written / c.exchanges / 1000:>11.1f}{c.writes / c.exchanges:>8.1f}"
              f"  {c.statuses}")
    print("(writer KB, writes: what the log writer wrote per exchange, its WAL and checkpoints, and in how many calls)")
    if len(counts) == 2:
        before, after = counts
        print(f"\nthis checkout / baseline: {after.per_exchange / before.per_exchange:.3f} "
              f"(node {after.node / after.exchanges / (before.node / before.exchanges):.3f})")


if __name__ == "__main__":
    main()
