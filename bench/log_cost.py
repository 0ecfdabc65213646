"""What the exchange log costs the full path: the gateway as it is, beside builds that leave a part of the log out.

All in one run, interleaved rounds, the same load and requests as `bench/exchange.py` (Progress PUTs over mTLS on
32 keep-alive connections, a student each), nginx beside them as the baseline. The targets:

- `the log as it is`: the node as it serves (decision and outcome records, each durable before the exchange goes on);
- `writer journals, no database`: the writer journals and fdatasyncs each batch and answers, but never puts it into
  SQLite (`bench/diagnostic_writer.py journal`);
- `writer answers at once`: the writer answers each batch without journal or database: the round trip alone;
- `no log`: the node appends nothing (each append returns at once).

Only the first keeps the log's promises; the others say what the database, the journal and the round trip each cost,
as throughput against the first and against nginx, and as CPU per exchange of the event loop and of the writer.

    .venv/bin/python bench/log_cost.py [--seconds 6] [--rounds 3]   (needs nginx: apt-get install nginx)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from exchange import (
    GATEWAY_NAMES,
    free_port,
    get_token,
    progress_puts,
    publisher_tls,
    server_threads,
    start_nginx,
    start_upstream,
    stop,
    thread_schedule,
    tree_cpu_seconds,
    wait_ready,
)
from loadgen import Result, run

# mode -> what the table calls it
MODES = {
    "full": "the log as it is",
    "journal": "writer journals, no database",
    "answer": "writer answers at once",
    "apart": "database in a process apart",
    "idle": "database apart, SCHED_IDLE",
    "none": "no log",
}


@dataclass
class Run:
    """One target's round: the load's result, and CPU us per exchange of the node's loop and of its writer."""

    result: Result
    loop_us: float = 0.0  # nginx: all its processes
    writer_us: float = 0.0
    loop_share: float = 0.0  # of the round's time, the loop on a CPU

    def rps(self) -> float:
        return self.result.rps


def serve_node(mode: str, directory: Path, upstream: str) -> None:
    """The demo federation's node (`connectors.samples.node_process`) with the part of the log `mode` leaves out."""
    from connectors.logstore import base, sqlite_writer
    from connectors.samples import node_process
    from gateway.cli import configure_logging, run_loop

    if mode not in MODES:
        sys.exit(f"unknown mode {mode!r}")
    if mode == "none":

        async def append(self: base.GroupCommitLog, record: object) -> int:
            return 0

        base.GroupCommitLog.append = append  # type: ignore[method-assign]
    elif mode != "full":  # every other mode is one of bench/diagnostic_writer.py's, which checks it again
        os.environ["EDUGATE_BENCH_WRITER"] = mode  # the writer process inherits it
        sqlite_writer.__file__ = str(Path(__file__).with_name("diagnostic_writer.py"))  # the script the node starts
    configure_logging("error")
    run_loop(node_process.main(directory, upstream))


def start_node(mode: str, work: Path, upstream_port: int, procs: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    directory = work / mode
    script = [sys.executable, __file__, "--node", mode, str(directory), f"http://127.0.0.1:{upstream_port}"]
    procs.append(subprocess.Popen(script))
    ready = wait_ready(directory, procs[-1], f"the {mode} node")
    ready["pid"] = procs[-1].pid
    return ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"the builds to measure, comma-separated; full always: {', '.join(MODES)}",
    )
    parser.add_argument("--node", nargs=3, metavar=("MODE", "DIRECTORY", "UPSTREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        serve_node(args.node[0], Path(args.node[1]), args.node[2])
        return
    if not shutil.which("nginx"):
        sys.exit("nginx is not installed: apt-get install nginx-light")
    asked = {"full", *args.modes.split(",")}
    if unknown := asked - MODES.keys():
        sys.exit(f"unknown modes: {', '.join(sorted(unknown))} (known: {', '.join(MODES)})")
    modes = {mode: name for mode, name in MODES.items() if mode in asked}

    work = Path(tempfile.mkdtemp(prefix="edugate-log-cost-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upstream_port, _ = start_upstream(procs)
        nginx_port = free_port()
        nodes = {mode: start_node(mode, work, upstream_port, procs) for mode in modes}
        nginx_pid = start_nginx(work, nginx_port, upstream_port, nodes["full"], procs)
        # each node is a federation of its own, with its own CA; nginx serves with the first one's certificates
        contexts = {mode: publisher_tls(node) for mode, node in nodes.items()}

        def load(port: int, mode: str, requests: list[bytes], seconds: float) -> Result:
            context = contexts[mode]
            return uvloop.run(
                run("127.0.0.1", port, context, requests, connections=args.connections, seconds=seconds, warmup=0)
            )

        rows: dict[str, list[Run]] = {"nginx": [], **{m: [] for m in modes}}
        for _ in range(args.rounds):
            requests = progress_puts(None, args.connections)
            load(nginx_port, "full", requests, 1.0)
            before = tree_cpu_seconds(nginx_pid)
            result = load(nginx_port, "full", requests, args.seconds)
            rows["nginx"].append(Run(result, (tree_cpu_seconds(nginx_pid) - before) / result.requests * 1e6))
            for mode, node in nodes.items():
                pid = int(node["pid"])
                requests = progress_puts(asyncio.run(get_token(int(node["port"]), node)), args.connections)
                load(int(node["port"]), mode, requests, 1.0)
                threads_before = thread_schedule(pid)
                result = load(int(node["port"]), mode, requests, args.seconds)
                threads = {t.label: t for t in server_threads(pid, threads_before, thread_schedule(pid), GATEWAY_NAMES)}
                loop, writer = threads.get(GATEWAY_NAMES[0]), threads.get(GATEWAY_NAMES[1])
                rows[mode].append(
                    Run(
                        result,
                        loop.on_cpu / result.requests * 1e6 if loop else 0.0,
                        writer.on_cpu / result.requests * 1e6 if writer else 0.0,
                        loop.on_cpu / result.seconds if loop else 0.0,
                    )
                )

        def median(mode: str, value: Callable[[Run], float]) -> float:
            values = sorted(value(run) for run in rows[mode])
            return values[len(values) // 2]

        for name, runs in rows.items():
            for i, r in enumerate(run.result for run in runs):
                if r.statuses.keys() - {200, 201} or r.errors:
                    print(f"round {i + 1}, {name}: statuses {dict(sorted(r.statuses.items()))}, {r.errors} broken")
        print(
            f"\nPUT /v1/progress/{{id}}, {args.connections} keep-alive connections, {args.seconds:g} s each,"
            f" median of {args.rounds} interleaved rounds\n"
        )
        print(
            f"{'target':<32}{'req/s':>8}{'/nginx':>8}{'/the log as it is':>19}{'loop us/exch':>14}"
            f"{'writer us/exch':>16}{'loop on CPU':>13}   per round, /the log as it is"
        )
        full, nginx = median("full", Run.rps), median("nginx", Run.rps)
        print(f"{'nginx mTLS reverse proxy':<32}{nginx:>8.0f}{1.0:>8.2f}")
        for mode, name in modes.items():
            rps = median(mode, Run.rps)
            per_round = ", ".join(f"{r.rps() / f.rps():.2f}" for r, f in zip(rows[mode], rows["full"], strict=True))
            print(
                f"{name:<32}{rps:>8.0f}{rps / nginx:>8.2f}{rps / full:>19.2f}"
                f"{median(mode, lambda r: r.loop_us):>14.0f}{median(mode, lambda r: r.writer_us):>16.0f}"
                f"{median(mode, lambda r: r.loop_share):>13.0%}   {per_round}"
            )
    finally:
        stop(procs, timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
