"""Where the event loop's CPU goes per exchange of the full path, step by step, on the loop thread's own CPU clock.

A node (`connectors.samples.node_process`) serves with its steps wrapped: each wrapper adds the loop thread's CPU
time (`time.thread_time_ns`) while the step runs, and for a coroutine only while it runs, not while it waits (for the
log's commit, the upstream, the body). Wall time would charge a step for every moment the loop was preempted inside
it, which on a machine whose cores the writer, the upstream and the load generator share is most of what per-step
wall times show. The load and requests are `bench/exchange.py`'s (Progress PUTs over mTLS, 32 keep-alive
connections, a student each). A plain node is measured in the same run for comparison.

Figures are inclusive (a step includes the steps indented under it) and include the wrappers' own cost, which the
node measures at start and the table states; the wrappers make the loop slower, so read the shares, not the sums.

    .venv/bin/python bench/loop_steps.py [--seconds 8] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from exchange import (
    GATEWAY_NAMES,
    get_token,
    progress_puts,
    publisher_tls,
    server_threads,
    start_upstream,
    stop,
    thread_schedule,
    wait_ready,
)
from loadgen import Result, run

# (label, "module:attribute.path"), in the order the table prints them; the checks come from pipeline.INBOUND
# and sit where "checks" is. Two spaces of indentation per level of nesting.
STEPS: tuple[tuple[str, str], ...] = (
    ("HTTP: parse requests (data_received)", "gateway.http1:ExchangeProtocol.data_received"),
    ("answer an exchange (all below, and writing the answer)", "gateway.http1:ExchangeProtocol._answer"),
    ("  the pipeline (handle_exchange)", "gateway.pipeline:handle_exchange"),
    ("checks", ""),
    ("      school: the activation store's version", "gateway.activation.freshness:SqliteFreshness.version"),
    ("      attributes: allowlist and identifier scan", "gateway.minimisation:Allowlist.minimise"),
    ("    decision record (Exchange.record)", "gateway.exchange:Exchange.record"),
    ("    log append, both records (the caller's part)", "connectors.logstore.base:GroupCommitLog.append"),
    ("    forward (upstream, outcome)", "gateway.pipeline:forward"),
    ("      upstream request (send, wait excluded)", "gateway.upstream:UpstreamPool.request"),
    ("      outcome (record, append, metrics)", "gateway.pipeline:_outcome"),
    ("log commit (a task of its own: batch, tree, frame)", "connectors.logstore.base:GroupCommitLog._commit"),
    ("upstream: parse answers (data_received)", "gateway.upstream:_Connection.data_received"),
)

# The top-level steps: what the loop spends outside them is the event loop itself, TLS and the writer's answers.
TOP_LEVEL = tuple(label for label, _ in STEPS if not label.startswith(" ") and label != "checks")

clock = time.thread_time_ns
Tally = dict[str, list[int]]  # label -> [nanoseconds, calls]


class _Running:
    """Awaits `coroutine`, adding to `tally` the loop thread's CPU only while the coroutine runs."""

    def __init__(self, coroutine: Any, tally: list[int]) -> None:
        self.coroutine, self.tally = coroutine, tally

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, tally = self.coroutine, self.tally
        value: Any = None
        error: BaseException | None = None
        while True:
            started = clock()
            try:
                step = coroutine.throw(error) if error is not None else coroutine.send(value)
            except StopIteration as done:
                tally[0] += clock() - started
                return done.value
            except BaseException:
                tally[0] += clock() - started
                raise
            tally[0] += clock() - started
            try:
                value, error = (yield step), None
            except BaseException as exc:  # cancellation, or a future's failure: passed into the coroutine
                value, error = None, exc


def timed(function: Callable[..., Any], tally: list[int], is_async: bool) -> Callable[..., Any]:
    if is_async:

        @functools.wraps(function)
        async def coroutine(*args: Any, **kwargs: Any) -> Any:
            tally[1] += 1
            return await _Running(function(*args, **kwargs), tally)

        return coroutine

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return function(*args, **kwargs)
        finally:
            tally[0] += clock() - started
            tally[1] += 1

    return call


def _wrap(tallies: Tally, label: str, owner: Any, name: str) -> None:
    function = getattr(owner, name)
    tallies[label] = [0, 0]
    setattr(owner, name, timed(function, tallies[label], inspect.iscoroutinefunction(function)))


def _wrapper_cost() -> tuple[float, float]:
    """Nanoseconds one wrapped call adds beyond the function itself: sync, and async (of the loop thread's CPU)."""

    def nothing() -> None:
        return None

    async def nothing_async() -> None:
        return None

    n = 20_000
    sync, asynchronous = timed(nothing, [0, 0], False), timed(nothing_async, [0, 0], True)

    async def measure() -> tuple[float, float]:
        started = clock()
        for _ in range(n):
            nothing()
        bare = clock() - started
        started = clock()
        for _ in range(n):
            sync()
        wrapped = clock() - started
        started = clock()
        for _ in range(n):
            await nothing_async()
        bare_async = clock() - started
        started = clock()
        for _ in range(n):
            await asynchronous()
        return (wrapped - bare) / n, (clock() - started - bare_async) / n

    return asyncio.run(measure())


def serve_instrumented(directory: Path, upstream: str, out: Path) -> None:
    """The node with STEPS wrapped; SIGUSR1 writes the tallies and the loop thread's CPU so far to `out`."""
    sync_cost, async_cost = _wrapper_cost()
    from connectors.samples import node_process
    from gateway import app, pipeline
    from gateway.cli import configure_logging, run_loop

    tallies: Tally = {}
    asynchronous: set[str] = set()
    for label, target in STEPS:
        if label == "checks":
            checks = []
            for check in pipeline.INBOUND:
                tallies[f"    check {check.__name__}"] = tally = [0, 0]
                is_async = inspect.iscoroutinefunction(check)
                checks.append(timed(check, tally, is_async))
            pipeline.INBOUND = tuple(checks)
            continue
        module, _, path = target.partition(":")
        owner: Any = importlib.import_module(module)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        if inspect.iscoroutinefunction(getattr(owner, name)):
            asynchronous.add(label)
        _wrap(tallies, label, owner, name)
    app.handle_exchange = pipeline.handle_exchange  # app calls the name it imported

    def write(*_: object) -> None:
        cost = {"sync": sync_cost, "async": async_cost, "async_labels": sorted(asynchronous)}
        partial = out.with_suffix(".partial")
        partial.write_text(json.dumps({"tallies": tallies, "loop_ns": clock(), "wrapper_ns": cost}))
        partial.rename(out)  # whole or not there, for the reader

    signal.signal(signal.SIGUSR1, write)
    configure_logging("error")
    run_loop(node_process.main(directory, upstream))


def _reading(pid: int, out: Path) -> dict[str, Any]:
    out.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.time() + 10
    while not out.exists():
        if time.time() > deadline:
            raise RuntimeError("the instrumented node wrote no tallies")
        time.sleep(0.05)
    reading: dict[str, Any] = json.loads(out.read_text())
    return reading


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--node", nargs=3, metavar=("DIRECTORY", "UPSTREAM", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        serve_instrumented(Path(args.node[0]), args.node[1], Path(args.node[2]))
        return

    work = Path(tempfile.mkdtemp(prefix="edugate-loop-steps-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upstream_port, _ = start_upstream(procs)
        upstream = f"http://127.0.0.1:{upstream_port}"
        out = work / "tallies.json"
        procs.append(subprocess.Popen([sys.executable, "-m", "connectors.samples.node_process", str(work / "plain"),
                                       upstream]))
        plain = wait_ready(work / "plain", procs[-1], "the plain node")
        plain["pid"] = procs[-1].pid
        procs.append(subprocess.Popen([sys.executable, __file__, "--node", str(work / "steps"), upstream, str(out)]))
        steps = wait_ready(work / "steps", procs[-1], "the instrumented node")
        steps["pid"] = procs[-1].pid

        def load(node: dict[str, Any], seconds: float) -> Result:
            requests = progress_puts(asyncio.run(get_token(int(node["port"]), node)), args.connections)
            return uvloop.run(run("127.0.0.1", int(node["port"]), publisher_tls(node), requests,
                                  connections=args.connections, seconds=seconds, warmup=0))

        load(plain, 1.0)
        before = thread_schedule(int(plain["pid"]))
        plain_result = load(plain, args.seconds)
        threads = server_threads(int(plain["pid"]), before, thread_schedule(int(plain["pid"])), GATEWAY_NAMES)
        plain_loop = next((t.on_cpu for t in threads if t.label == GATEWAY_NAMES[0]), float("nan"))

        load(steps, 1.0)
        first = _reading(int(steps["pid"]), out)
        result = load(steps, args.seconds)
        last = _reading(int(steps["pid"]), out)
    finally:
        stop(procs, timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    for name, r in (("plain", plain_result), ("instrumented", result)):
        if r.statuses.keys() - {200, 201} or r.errors:
            sys.exit(f"the {name} node answered {dict(sorted(r.statuses.items()))}, {r.errors} broken")
    n = result.requests
    loop_us = (last["loop_ns"] - first["loop_ns"]) / n / 1000
    per_exchange = {
        label: ((ns - first["tallies"][label][0]) / n / 1000, (calls - first["tallies"][label][1]) / n)
        for label, (ns, calls) in last["tallies"].items()
    }
    cost = last["wrapper_ns"]
    wrappers_us = sum(
        calls * (cost["async"] if label in cost["async_labels"] else cost["sync"]) / 1000
        for label, (_, calls) in per_exchange.items()
    )
    print(f"\nPUT /v1/progress/{{id}}, {args.connections} keep-alive connections, {args.seconds:g} s each\n")
    plain_us = plain_loop / plain_result.requests * 1e6
    print(f"plain node:        {plain_result.rps:6.0f} req/s, the loop at {plain_us:.0f} us of CPU per exchange")
    print(f"instrumented node: {result.rps:6.0f} req/s, the loop at {loop_us:.0f} us of CPU per exchange, of which"
          f" the wrappers about {wrappers_us:.0f} us ({cost['sync']:.0f} ns a sync call, {cost['async']:.0f} ns an"
          " async one)\n")
    print(f"{'step (inclusive)':<58}{'us/exch':>9}{'of loop':>9}{'calls/exch':>12}")
    for label, (us, calls) in per_exchange.items():
        print(f"{label:<58}{us:>9.1f}{us / loop_us:>9.1%}{calls:>12.2f}")
    rest = loop_us - sum(per_exchange[label][0] for label in TOP_LEVEL)
    print(f"{'the rest: the event loop, TLS, the writer answers':<58}{rest:>9.1f}{rest / loop_us:>9.1%}")


if __name__ == "__main__":
    main()
